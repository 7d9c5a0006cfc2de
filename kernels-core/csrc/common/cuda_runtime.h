// What the CUDA runtime linked into this module reports. Without a driver (a CPU machine) the
// calls fail with cudaErrorInsufficientDriver; that is reported as "no GPU", not an error.
#pragma once

#include <string>
#include <vector>

namespace kc::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int major = 0, minor = 0;
  long long total_memory = 0;
};

struct RuntimeInfo {
  bool compiled = false;          // the module contains CUDA kernels
  int runtime_version = 0;        // CUDART_VERSION linked in, e.g. 13000
  int driver_version = 0;         // 0 when there is no driver
  std::string status;             // "ok" or why no device is usable
  std::vector<DeviceInfo> devices;
};

RuntimeInfo runtime_info();

}  // namespace kc::cuda
