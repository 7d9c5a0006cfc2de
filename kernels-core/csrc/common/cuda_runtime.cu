#include <cuda_runtime.h>

#include "common/cuda_runtime.h"

namespace kc::cuda {

RuntimeInfo runtime_info() {
  RuntimeInfo info;
  info.compiled = true;
  info.runtime_version = CUDART_VERSION;
  cudaDriverGetVersion(&info.driver_version);
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    info.status = err == cudaErrorInsufficientDriver || err == cudaErrorNoDevice
                      ? std::string("no usable GPU: ") + cudaGetErrorString(err)
                      : std::string("CUDA error: ") + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return info;
  }
  info.status = "ok";
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    info.devices.push_back({i, prop.name, prop.major, prop.minor, static_cast<long long>(prop.totalGlobalMem)});
  }
  return info;
}

}  // namespace kc::cuda
