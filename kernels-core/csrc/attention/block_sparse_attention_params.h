// Arguments of the block-sparse attention forward, shared by the CPU and CUDA kernels.
//
// Every tensor is passed as a raw address plus element strides, so the kernels need no torch
// headers and work with any torch version. The head dimension is always contiguous.
#pragma once

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/dtype.h"

#if defined(__CUDACC__)
#define KC_HOST_DEVICE __host__ __device__
#else
#define KC_HOST_DEVICE
#endif

namespace kc {

struct BlockSparseAttentionParams {
  // q [B, Hq, Sq, D], k and v [B, Hkv, Sk, D], out [B, Hq, Sq, D], all of `dtype`.
  std::uintptr_t q = 0, k = 0, v = 0, out = 0;
  // lse [B, Hq, Sq] float32, contiguous: natural-log log-sum-exp of the scaled scores
  // (-inf for query rows that see no key).
  std::uintptr_t lse = 0;
  // block_mask [B, Hq, ceil(Sq/block_q), ceil(Sk/block_k)] as bytes (nonzero = compute);
  // a stride of 0 broadcasts that dimension.
  std::uintptr_t block_mask = 0;
  DType dtype = DType::kFloat32;

  int64_t batch = 0, heads_q = 0, heads_kv = 0, seqlen_q = 0, seqlen_k = 0, head_dim = 0;
  // Element strides for (batch, head, sequence).
  std::array<int64_t, 3> q_stride{}, k_stride{}, v_stride{}, out_stride{};
  // Element strides for (batch, head, query block, key block).
  std::array<int64_t, 4> mask_stride{};

  int64_t block_q = 64, block_k = 64;
  // Causal aligned bottom-right as in FlashAttention: query i sees keys j <= i + Sk - Sq.
  bool causal = false;
  float scale = 1.0f;

  KC_HOST_DEVICE int64_t num_query_blocks() const { return (seqlen_q + block_q - 1) / block_q; }
  KC_HOST_DEVICE int64_t num_key_blocks() const { return (seqlen_k + block_k - 1) / block_k; }
  KC_HOST_DEVICE int64_t group_size() const { return heads_q / heads_kv; }

  KC_HOST_DEVICE bool block_enabled(int64_t b, int64_t h, int64_t qb, int64_t kb) const {
    const auto* mask = reinterpret_cast<const uint8_t*>(block_mask);
    return mask[b * mask_stride[0] + h * mask_stride[1] + qb * mask_stride[2] + kb * mask_stride[3]] != 0;
  }

  // The Python layer checks everything with messages that name the argument; this is the
  // last line of defence against a crash when the binding is called directly.
  void validate() const {
    auto fail = [](const std::string& what) { throw std::invalid_argument("block_sparse_attention: " + what); };
    if (!q || !k || !v || !out || !lse || !block_mask) fail("a tensor address is null");
    if (batch <= 0 || heads_q <= 0 || heads_kv <= 0 || seqlen_q <= 0 || seqlen_k <= 0 || head_dim <= 0)
      fail("sizes must be positive");
    if (heads_q % heads_kv != 0) fail("heads_q must be a multiple of heads_kv");
    if (block_q <= 0 || block_k <= 0) fail("block sizes must be positive");
  }
};

}  // namespace kc
