// Stand-in for builds whose CUDA architecture list holds nothing of sm_80 or newer.
#include <stdexcept>

#include "quant/fp8_attention.h"

namespace kc {

void fp8_attention_cuda(const Fp8AttentionParams&, std::uintptr_t, int) {
  throw std::runtime_error(
      "fp8_attention (CUDA): this build of kernels-core has no FP8 kernel (KC_CUDA_ARCHS holds no sm_80 or newer)");
}

}  // namespace kc
