// Split-K decode (flash-decoding) shared by the SIMT and tensor-core decode kernels: how the key
// lists are split, the fp32 workspace of per-split partial results, and the pass that merges
// the splits into the output and lse.
#pragma once

#include <cstdint>

#include "attention/cuda/cuda_common.cuh"
#include "attention/decode_attention_params.h"

namespace kc::cuda_detail::decode {

constexpr int kMergeWarps = 4;
constexpr int kMaxRowsPerTile = 16;  // query rows (group x Sq) one split CTA handles
constexpr int64_t kMinKeysPerSplit = 256;

// Sizes of the split pass: rows = group x Sq query rows per key/value head.
struct SplitLayout {
  int64_t rows, row_tiles, splits, keys_per_split;
};

inline SplitLayout make_layout(const DecodeAttentionParams& p, int sm_count) {
  SplitLayout L{};
  L.rows = p.group_size() * p.seqlen_q;
  L.row_tiles = (L.rows + kMaxRowsPerTile - 1) / kMaxRowsPerTile;
  const int64_t longest = p.kv_indices != 0 ? p.num_indices : p.cache_len;
  const int64_t ctas = p.batch * p.heads_kv * L.row_tiles;
  const int64_t wanted = (2 * static_cast<int64_t>(sm_count) + ctas - 1) / ctas;
  L.splits = max(int64_t{1}, min(wanted, (longest + kMinKeysPerSplit - 1) / kMinKeysPerSplit));
  L.keys_per_split = (longest + L.splits - 1) / L.splits;
  return L;
}

// Workspace per (batch * kv head, split, row): o [Dp], m, l.
__device__ __forceinline__ float* split_state(float* ws, const SplitLayout& L, int64_t bh, int64_t split, int64_t row,
                                              int64_t D) {
  return ws + ((bh * L.splits + split) * L.rows + row) * (D + 2);
}

// Pass 2: one warp per (batch, query head, query) row.
template <typename T>
__global__ void __launch_bounds__(kMergeWarps * 32) decode_merge_kernel(const DecodeAttentionParams p, const SplitLayout L,
                                                                const float* ws) {
  const int64_t global_row = static_cast<int64_t>(blockIdx.x) * kMergeWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (global_row >= p.batch * p.heads_kv * L.rows) return;
  const int64_t bh = global_row / L.rows, row = global_row % L.rows;
  const int64_t D = p.head_dim;
  float m = -INFINITY;
  for (int64_t s = 0; s < L.splits; ++s) m = fmaxf(m, split_state(const_cast<float*>(ws), L, bh, s, row, D)[D]);
  float l = 0.0f;
  const int64_t b = bh / p.heads_kv, hk = bh % p.heads_kv;
  const int64_t h = hk * p.group_size() + row / p.seqlen_q, i = row % p.seqlen_q;
  T* out = reinterpret_cast<T*>(p.out) + b * p.out_stride[0] + h * p.out_stride[1] + i * p.out_stride[2];
  for (int64_t s = 0; s < L.splits && m != -INFINITY; ++s) {
    const float* st = split_state(const_cast<float*>(ws), L, bh, s, row, D);
    if (st[D + 1] > 0.0f) l += st[D + 1] * exp2f(st[D] - m);
  }
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  for (int64_t d = lane; d < D; d += 32) {
    float acc = 0.0f;
    for (int64_t s = 0; s < L.splits && m != -INFINITY; ++s) {
      const float* st = split_state(const_cast<float*>(ws), L, bh, s, row, D);
      if (st[D + 1] > 0.0f) acc += st[d] * exp2f(st[D] - m);
    }
    out[d] = from_float<T>(acc * inv);
  }
  if (lane == 0) {
    reinterpret_cast<float*>(p.lse)[(b * p.heads_q + h) * p.seqlen_q + i] =
        l > 0.0f ? (m + log2f(l)) * kLn2 : -INFINITY;
  }
}

template <typename T>
void launch_merge(const DecodeAttentionParams& p, const SplitLayout& L, cudaStream_t stream, const float* ws) {
  const int64_t rows = p.batch * p.heads_kv * L.rows;
  decode_merge_kernel<T>
      <<<static_cast<unsigned>((rows + kMergeWarps - 1) / kMergeWarps), kMergeWarps * 32, 0, stream>>>(p, L, ws);
  check(cudaGetLastError(), "decode_attention", "merge launch");
}

inline void merge(const DecodeAttentionParams& p, const SplitLayout& L, cudaStream_t stream, const float* ws) {
  switch (p.dtype) {
    case DType::kFloat32:
      return launch_merge<float>(p, L, stream, ws);
    case DType::kFloat16:
      return launch_merge<__half>(p, L, stream, ws);
    case DType::kBFloat16:
      return launch_merge<__nv_bfloat16>(p, L, stream, ws);
  }
}

}  // namespace kc::cuda_detail::decode
