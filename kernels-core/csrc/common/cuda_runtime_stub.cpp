// CPU-only build: no CUDA runtime, and the CUDA entry points explain how to get them.
#include <stdexcept>

#include "attention/block_sparse_attention.h"
#include "common/cuda_runtime.h"

namespace kc {

namespace cuda {
RuntimeInfo runtime_info() {
  RuntimeInfo info;
  info.status = "kernels-core was built without CUDA (no CUDA compiler found, or KC_CUDA=OFF)";
  return info;
}
}  // namespace cuda

void block_sparse_attention_forward_cuda(const BlockSparseAttentionParams&, std::uintptr_t, int) {
  throw std::runtime_error(
      "block_sparse_attention: kernels-core was built without CUDA; reinstall it on a machine with nvcc "
      "(and without KC_CUDA=OFF) to run on the GPU");
}

}  // namespace kc
