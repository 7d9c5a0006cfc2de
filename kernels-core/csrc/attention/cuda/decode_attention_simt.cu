// Decode attention on CUDA: split-K SIMT kernels (flash-decoding), fp32 math.
//
// (The split layout, workspace and merge pass live in decode_split.cuh.)
// Pass 1: a CTA of 4 warps owns up to 16 query rows (the Sq queries of the query heads of one
// key/value head) and one split of that head's key list. It gathers 32 keys at a time (by
// position list or contiguously) into shared memory, lane j scores key j, and the warp keeps a
// running softmax per row. Each split writes its partial (max, sum, output) to a workspace.
// Pass 2: one warp per output row merges the splits and writes out and lse.
#include <cstdint>

#include "attention/cuda/attention_kernels.h"
#include "attention/cuda/cuda_common.cuh"
#include "attention/cuda/decode_split.cuh"

namespace kc::cuda_detail {
namespace {
using decode::SplitLayout;
using decode::split_state;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = 4;
constexpr int kTileRows = kWarps * kRowsPerWarp;
constexpr int kTileKeys = 32;
template <typename T, int kChunks>
__global__ void __launch_bounds__(kThreads) decode_split_kernel(const DecodeAttentionParams p, const SplitLayout L,
                                                                float* ws) {
  extern __shared__ float smem[];
  const int D = static_cast<int>(p.head_dim);
  const int ld = D + 1;
  float* qs = smem;                 // [kTileRows, D]
  float* ks = qs + kTileRows * D;   // [kTileKeys, D + 1]
  float* vs = ks + kTileKeys * ld;  // [kTileKeys, D]
  __shared__ int64_t positions[kTileKeys];
  __shared__ int gathered;

  const int64_t bh = blockIdx.z, split = blockIdx.y, tile = blockIdx.x;
  const int64_t b = bh / p.heads_kv, hk = bh % p.heads_kv;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row0 = tile * kTileRows;
  const int rows = static_cast<int>(min(static_cast<int64_t>(kTileRows), L.rows - row0));
  const int64_t valid = p.valid_length(b);
  const int64_t total = p.num_keys(b, hk);
  const int64_t begin = split * L.keys_per_split, end = min(total, begin + L.keys_per_split);
  const float q_scale = p.scale * kLog2e;

  for (int idx = threadIdx.x; idx < rows * D; idx += blockDim.x) {
    const int r = idx / D, d = idx % D;
    const int64_t row = row0 + r;
    const int64_t h = hk * p.group_size() + row / p.seqlen_q, i = row % p.seqlen_q;
    const T* q = token_ptr<const T>(p.q, p.q_stride, b, h, i);
    qs[r * D + d] = to_float(q[d]) * q_scale;
  }

  float o[kRowsPerWarp][kChunks];
  float m[kRowsPerWarp], l[kRowsPerWarp];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    m[rr] = -INFINITY;
    l[rr] = 0.0f;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) o[rr][c] = 0.0f;
  }

  const T* kg = token_ptr<const T>(p.k, p.k_stride, b, hk, 0);
  const T* vg = token_ptr<const T>(p.v, p.v_stride, b, hk, 0);
  for (int64_t j0 = begin; j0 < end; j0 += kTileKeys) {
    __syncthreads();  // the previous keys are consumed (and the queries written)
    if (threadIdx.x == 0) {
      // Compact the valid positions of this window (lists may hold -1 or stale entries).
      int n = 0;
      for (int64_t j = j0; j < min(end, j0 + kTileKeys); ++j) {
        const int64_t pos = p.key_position(b, hk, j);
        if (pos >= 0 && pos < valid) positions[n++] = pos;
      }
      gathered = n;
    }
    __syncthreads();
    const int keys = gathered;
    if (keys == 0) continue;
    for (int idx = threadIdx.x; idx < keys * D; idx += blockDim.x) {
      const int c = idx / D, d = idx % D;
      ks[c * ld + d] = to_float(kg[positions[c] * p.k_stride[2] + d]);
      vs[c * D + d] = to_float(vg[positions[c] * p.v_stride[2] + d]);
    }
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int r = warp * kRowsPerWarp + rr;
      if (r >= rows) break;
      const int64_t i = (row0 + r) % p.seqlen_q;
      const bool visible = lane < keys && (!p.causal || positions[min(lane, keys - 1)] <= valid - p.seqlen_q + i);
      float s = -INFINITY;
      if (visible) {
        float dot = 0.0f;
        for (int d = 0; d < D; ++d) dot += qs[r * D + d] * ks[lane * ld + d];
        s = dot;
      }
      warp_softmax_step(s, keys, vs, D, D, m[rr], l[rr], o[rr]);
    }
  }

#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int r = warp * kRowsPerWarp + rr;
    if (r >= rows) break;
    float* st = split_state(ws, L, bh, split, row0 + r, D);
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int d = lane + 32 * c;
      if (d < D) st[d] = o[rr][c];
    }
    if (lane == 0) {
      st[D] = m[rr];
      st[D + 1] = l[rr];
    }
  }
}

template <typename T, int kChunks>
void launch(const DecodeAttentionParams& p, const SplitLayout& L, cudaStream_t stream, float* ws) {
  const size_t smem = sizeof(float) * (kTileRows * p.head_dim + kTileKeys * (p.head_dim + 1) + kTileKeys * p.head_dim);
  auto split_kernel = decode_split_kernel<T, kChunks>;
  allow_shared_memory(split_kernel, smem, "decode_attention");
  const dim3 grid(static_cast<unsigned>(L.row_tiles), static_cast<unsigned>(L.splits),
                  static_cast<unsigned>(p.batch * p.heads_kv));
  split_kernel<<<grid, kThreads, smem, stream>>>(p, L, ws);
  check(cudaGetLastError(), "decode_attention", "split launch");
}

template <typename T>
void launch_for_head_dim(const DecodeAttentionParams& p, const SplitLayout& L, cudaStream_t stream, float* ws) {
  switch ((p.head_dim + 31) / 32) {
    case 1: return launch<T, 1>(p, L, stream, ws);
    case 2: return launch<T, 2>(p, L, stream, ws);
    case 3: return launch<T, 3>(p, L, stream, ws);
    case 4: return launch<T, 4>(p, L, stream, ws);
    case 5: return launch<T, 5>(p, L, stream, ws);
    case 6: return launch<T, 6>(p, L, stream, ws);
    case 7: return launch<T, 7>(p, L, stream, ws);
    case 8: return launch<T, 8>(p, L, stream, ws);
    default: break;
  }
  throw std::invalid_argument("decode_attention (CUDA): head_dim must be <= 256");
}

}  // namespace

void decode_simt(const DecodeAttentionParams& p, const decode::SplitLayout& L, cudaStream_t stream, float* ws) {
  switch (p.dtype) {
    case DType::kFloat32:
      return launch_for_head_dim<float>(p, L, stream, ws);
    case DType::kFloat16:
      return launch_for_head_dim<__half>(p, L, stream, ws);
    case DType::kBFloat16:
      return launch_for_head_dim<__nv_bfloat16>(p, L, stream, ws);
  }
}

}  // namespace kc::cuda_detail
