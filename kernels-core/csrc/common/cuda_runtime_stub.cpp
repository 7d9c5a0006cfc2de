// CPU-only build: no CUDA runtime, and the CUDA entry points explain how to get them.
#include <stdexcept>
#include <string>

#include "attention/block_sparse_attention.h"
#include "attention/decode_attention_params.h"
#include "geometry/nearest_neighbor.h"
#include "quant/fp8_attention.h"
#include "common/cuda_runtime.h"

namespace kc {

namespace cuda {
RuntimeInfo runtime_info() {
  RuntimeInfo info;
  info.status = "kernels-core was built without CUDA (no CUDA compiler found, or KC_CUDA=OFF)";
  return info;
}
}  // namespace cuda

namespace {
[[noreturn]] void no_cuda(const char* op) {
  throw std::runtime_error(std::string(op) +
                           ": kernels-core was built without CUDA; reinstall it on a machine with nvcc "
                           "(and without KC_CUDA=OFF) to run on the GPU");
}
}  // namespace

void block_sparse_attention_forward_cuda(const BlockSparseAttentionParams&, std::uintptr_t, int) {
  no_cuda("block_sparse_attention");
}

void block_sparse_attention_backward_cuda(const BlockSparseAttentionBackwardParams&, std::uintptr_t, int) {
  no_cuda("block_sparse_attention_backward");
}

void decode_attention_cuda(const DecodeAttentionParams&, std::uintptr_t, int) { no_cuda("decode_attention"); }

void nearest_neighbor_cuda(const NearestNeighborParams&, std::uintptr_t, int) { no_cuda("nearest_neighbor"); }

void fp8_encode_cuda(std::uintptr_t, std::uintptr_t, int64_t, std::uintptr_t, int) { no_cuda("fp8_encode"); }

void fp8_attention_cuda(const Fp8AttentionParams&, std::uintptr_t, int) { no_cuda("fp8_attention"); }

}  // namespace kc
