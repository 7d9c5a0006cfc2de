// Arguments of block-sparse attention (forward and backward), shared by the CPU and CUDA kernels.
//
// Every tensor is passed as a raw address plus element strides, so the kernels need no torch
// headers and work with any torch version. The head dimension is always contiguous.
//
// Two layouts of the token dimension:
// - batched: q [B, Hq, Sq, D], k and v [B, Hkv, Sk, D] (any strides for B, H, S);
// - variable length (cu_seqlens_q/k set): sequences packed along the token axis as in
//   FlashAttention's varlen API; sequence b owns q rows cu_seqlens_q[b] .. cu_seqlens_q[b+1]-1.
//   seqlen_q/seqlen_k are then the maxima and the batch strides are 0.
// Three sparsity modes for the key blocks of a (batch, query head, query block) row:
// - dense (no mask given),
// - a bool block mask [B, Hq, nqb, nkb] as bytes (nonzero = compute),
// - key-block index lists: counts [B, Hq, nqb] and indices [B, Hq, nqb, L] (int32); row r uses
//   indices[r, 0 .. counts[r]-1], in any order and without duplicates.
#pragma once

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/dtype.h"
#include "common/host_device.h"

namespace kc {

// Token range of one sequence of the batch.
struct SequenceSpan {
  int64_t q_start, q_len, k_start, k_len;
};

struct BlockSparseAttentionParams {
  // q [.., Hq, .., D], k and v [.., Hkv, .., D], out like q, all of `dtype`.
  std::uintptr_t q = 0, k = 0, v = 0, out = 0;
  // lse like q without D, float32: natural-log log-sum-exp of the scaled scores (-inf for query
  // rows that see no key).
  std::uintptr_t lse = 0;
  DType dtype = DType::kFloat32;

  int64_t batch = 0, heads_q = 0, heads_kv = 0, seqlen_q = 0, seqlen_k = 0, head_dim = 0;
  // Element strides for (batch, head, token).
  std::array<int64_t, 3> q_stride{}, k_stride{}, v_stride{}, out_stride{}, lse_stride{};

  // int32 [batch + 1] prefix sums of the sequence lengths, or 0 for the batched layout.
  std::uintptr_t cu_seqlens_q = 0, cu_seqlens_k = 0;
  // Extent of the token axis of q and of k/v: the packed totals for variable length, else the
  // sequence lengths (kernels that address whole tensors, like TMA, need them).
  int64_t tokens_q = 0, tokens_k = 0;

  // Sparsity (see above). Strides in elements; a stride of 0 broadcasts that dimension.
  std::uintptr_t block_mask = 0;
  std::array<int64_t, 4> mask_stride{};
  std::uintptr_t block_counts = 0, block_indices = 0;
  int64_t indices_width = 0;  // L: counts above it are clamped (the value checks live in Python)
  std::array<int64_t, 3> counts_stride{};
  std::array<int64_t, 4> indices_stride{};

  int64_t block_q = 64, block_k = 64;
  // Causal aligned bottom-right per sequence as in FlashAttention: query i sees keys j <= i + Sk - Sq.
  bool causal = false;
  float scale = 1.0f;

  KC_HOST_DEVICE bool varlen() const { return cu_seqlens_q != 0; }
  KC_HOST_DEVICE int64_t num_query_blocks() const { return (seqlen_q + block_q - 1) / block_q; }
  KC_HOST_DEVICE int64_t num_key_blocks() const { return (seqlen_k + block_k - 1) / block_k; }
  KC_HOST_DEVICE int64_t group_size() const { return heads_q / heads_kv; }

  KC_HOST_DEVICE SequenceSpan sequence(int64_t b) const {
    if (!varlen()) return {0, seqlen_q, 0, seqlen_k};
    const auto* cq = reinterpret_cast<const int32_t*>(cu_seqlens_q);
    const auto* ck = reinterpret_cast<const int32_t*>(cu_seqlens_k);
    return {cq[b], cq[b + 1] - cq[b], ck[b], ck[b + 1] - ck[b]};
  }

  // Number of candidate key blocks of row (b, h, qb): walk j = 0 .. row_length - 1 and ask
  // row_block(j), which returns the key block or -1 when the mask disables it.
  KC_HOST_DEVICE int64_t row_length(int64_t b, int64_t h, int64_t qb) const {
    if (block_counts == 0) return num_key_blocks();
    const auto* counts = reinterpret_cast<const int32_t*>(block_counts);
    const int64_t count = counts[b * counts_stride[0] + h * counts_stride[1] + qb * counts_stride[2]];
    return count < indices_width ? count : indices_width;  // never read past the list
  }

  KC_HOST_DEVICE int64_t row_block(int64_t b, int64_t h, int64_t qb, int64_t j) const {
    if (block_indices != 0) {
      const auto* idx = reinterpret_cast<const int32_t*>(block_indices);
      return idx[b * indices_stride[0] + h * indices_stride[1] + qb * indices_stride[2] + j * indices_stride[3]];
    }
    return block_enabled(b, h, qb, j) ? j : -1;
  }

  // Bool-mask or dense lookup (index lists are turned into a mask before the backward).
  KC_HOST_DEVICE bool block_enabled(int64_t b, int64_t h, int64_t qb, int64_t kb) const {
    if (block_mask == 0) return true;
    const auto* mask = reinterpret_cast<const uint8_t*>(block_mask);
    return mask[b * mask_stride[0] + h * mask_stride[1] + qb * mask_stride[2] + kb * mask_stride[3]] != 0;
  }

  // The Python layer checks everything with messages that name the argument; this is the
  // last line of defence against a crash when the binding is called directly.
  void validate() const {
    auto fail = [](const std::string& what) { throw std::invalid_argument("block_sparse_attention: " + what); };
    if (!q || !k || !v || !out || !lse) fail("a tensor address is null");
    if (batch <= 0 || heads_q <= 0 || heads_kv <= 0 || seqlen_q <= 0 || seqlen_k <= 0 || head_dim <= 0)
      fail("sizes must be positive");
    if (heads_q % heads_kv != 0) fail("heads_q must be a multiple of heads_kv");
    if (block_q <= 0 || block_k <= 0) fail("block sizes must be positive");
    if ((cu_seqlens_q == 0) != (cu_seqlens_k == 0)) fail("cu_seqlens_q and cu_seqlens_k go together");
    if ((block_counts == 0) != (block_indices == 0)) fail("block_counts and block_indices go together");
    if (block_mask != 0 && block_indices != 0) fail("give a block mask or index lists, not both");
  }
};

// The backward reads the forward's arguments (q, k, v, out, lse, sparsity) plus the gradients.
// Index lists are not accepted here: the backward walks the mask by key block.
struct BlockSparseAttentionBackwardParams : BlockSparseAttentionParams {
  // dout like q (dtype); dlse like lse (float32, optional: 0 means zero).
  std::uintptr_t dout = 0, dlse = 0;
  // dq_accum like q but float32 and zero-initialised: the kernel adds scale * dS K into it.
  std::uintptr_t dq_accum = 0;
  // dk, dv like k and v (dtype): fully written by the kernel.
  std::uintptr_t dk = 0, dv = 0;
  std::array<int64_t, 3> dout_stride{}, dlse_stride{}, dq_stride{}, dk_stride{}, dv_stride{};

  void validate_backward() const {
    validate();
    auto fail = [](const std::string& what) {
      throw std::invalid_argument("block_sparse_attention_backward: " + what);
    };
    if (!dout || !dq_accum || !dk || !dv) fail("a gradient address is null");
    if (block_indices != 0) fail("index lists must be converted to a block mask first");
  }
};

}  // namespace kc
