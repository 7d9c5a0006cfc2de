// CUDA entry points of the attention ops: argument checks and the choice of kernel.
#include <stdexcept>
#include <string>

#include "attention/block_sparse_attention.h"
#include "attention/cuda/attention_kernels.h"
#include "attention/cuda/cuda_common.cuh"
#include "attention/cuda/decode_split.cuh"
#include "attention/decode_attention_params.h"

namespace kc {
namespace {

constexpr int64_t kMaxHeadDim = 256;

void check_head_dim(int64_t head_dim, const char* op) {
  if (head_dim > kMaxHeadDim) {
    throw std::invalid_argument(std::string(op) + " (CUDA): head_dim must be <= 256, got " + std::to_string(head_dim));
  }
}

}  // namespace

void block_sparse_attention_forward_cuda(const BlockSparseAttentionParams& params, std::uintptr_t stream,
                                         int device) {
  params.validate();
  check_head_dim(params.head_dim, "block_sparse_attention");
  cuda_detail::check(cudaSetDevice(device), "block_sparse_attention", "selecting the device");
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const int major = cuda_detail::compute_capability_major(device);
  if (cuda_detail::forward_sm90_supports(params, major)) {
    cuda_detail::forward_sm90(params, s);
  } else if (cuda_detail::forward_sm80_supports(params, major)) {
    cuda_detail::forward_sm80(params, s);
  } else {
    cuda_detail::forward_simt(params, s);
  }
}

void block_sparse_attention_backward_cuda(const BlockSparseAttentionBackwardParams& params, std::uintptr_t stream,
                                          int device) {
  params.validate_backward();
  check_head_dim(params.head_dim, "block_sparse_attention_backward");
  const char* op = "block_sparse_attention_backward";
  cuda_detail::check(cudaSetDevice(device), op, "selecting the device");
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  // delta [B, Hq, max Sq] lives only for this call; stream-ordered allocation keeps it cheap.
  void* delta = nullptr;
  const size_t bytes = sizeof(float) * static_cast<size_t>(params.batch * params.heads_q * params.seqlen_q);
  cuda_detail::check(cudaMallocAsync(&delta, bytes, s), op, "allocating the workspace");
  try {
    auto* d = static_cast<float*>(delta);
    cuda_detail::backward_delta(params, s, d);
    if (cuda_detail::backward_sm80_supports(params, cuda_detail::compute_capability_major(device))) {
      cuda_detail::backward_sm80(params, s, d);
    } else {
      cuda_detail::backward_simt(params, s, d);
    }
  } catch (...) {
    cudaFreeAsync(delta, s);
    throw;
  }
  cuda_detail::check(cudaFreeAsync(delta, s), op, "freeing the workspace");
}

void decode_attention_cuda(const DecodeAttentionParams& params, std::uintptr_t stream, int device) {
  params.validate();
  check_head_dim(params.head_dim, "decode_attention");
  const char* op = "decode_attention";
  cuda_detail::check(cudaSetDevice(device), op, "selecting the device");
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  int sm_count = 1;
  cuda_detail::check(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device), op,
                     "querying the device");
  const cuda_detail::decode::SplitLayout layout = cuda_detail::decode::make_layout(params, sm_count);
  void* ws = nullptr;
  const size_t bytes =
      sizeof(float) * static_cast<size_t>(params.batch * params.heads_kv * layout.splits * layout.rows *
                                          (params.head_dim + 2));
  cuda_detail::check(cudaMallocAsync(&ws, bytes, s), op, "allocating the workspace");
  try {
    auto* w = static_cast<float*>(ws);
    if (cuda_detail::decode_sm80_supports(params, cuda_detail::compute_capability_major(device))) {
      cuda_detail::decode_sm80(params, layout, s, w);
    } else {
      cuda_detail::decode_simt(params, layout, s, w);
    }
    cuda_detail::decode::merge(params, layout, s, w);
  } catch (...) {
    cudaFreeAsync(ws, s);
    throw;
  }
  cuda_detail::check(cudaFreeAsync(ws, s), op, "freeing the workspace");
}

}  // namespace kc
