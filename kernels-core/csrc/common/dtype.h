// Element types the kernels accept. The numbering is part of the Python <-> C++ contract
// (kernels_core/_binding.py maps torch dtypes to these codes).
#pragma once

#include <cstdint>

namespace kc {

enum class DType : int32_t {
  kFloat32 = 0,
  kFloat16 = 1,
  kBFloat16 = 2,
};

inline const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
  }
  return "unknown";
}

}  // namespace kc
