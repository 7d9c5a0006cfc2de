// Block-sparse attention backward on CUDA: portable SIMT kernels (fp32 math), deterministic.
// They serve the inputs the tensor-core backward does not take, like the SIMT forward.
//
// Three launches, none with atomics:
//   1. delta[b, h, i] = dO_i . O_i - dlse_i                 one warp per query row
//   2. dK, dV per key tile (kv-major): a CTA owns 16 keys of one (batch, kv head) and walks every
//      query head of the group and every query block whose mask enables the key block, in
//      32-query sub-tiles (lane = query):  P, dP = dO V^T, dS = scale P (dP - delta),
//      dV += P^T dO, dK += dS^T Q
//   3. dQ per query tile (q-major, like the forward): a CTA owns 16 query rows and walks the
//      enabled key blocks in 32-key sub-tiles (lane = key): dQ += dS K
// P is recomputed from the saved lse in both passes.
#include <cstdint>

#include "attention/cuda/attention_kernels.h"
#include "attention/cuda/cuda_common.cuh"

namespace kc::cuda_detail {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = 4;
constexpr int kTileRows = kWarps * kRowsPerWarp;  // keys (pass 2) or queries (pass 3) per CTA
constexpr int kSubTile = 32;                       // queries (pass 2) or keys (pass 3) per step

template <typename T>
__global__ void __launch_bounds__(kThreads) delta_kernel(const BlockSparseAttentionBackwardParams p, float* delta) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const SequenceSpan seq = p.sequence(b);
  if (row >= seq.q_len) return;
  const int64_t i = seq.q_start + row;
  const T* o = token_ptr<const T>(p.out, p.out_stride, b, h, i);
  const T* dout =
      token_ptr<const T>(p.dout, p.dout_stride, b, h, i);
  float acc = 0.0f;
  for (int64_t d = lane; d < p.head_dim; d += 32) acc += to_float(o[d]) * to_float(dout[d]);
  acc = warp_sum(acc);
  if (lane == 0) {
    if (p.dlse != 0) {
      acc -= reinterpret_cast<const float*>(p.dlse)[b * p.dlse_stride[0] + h * p.dlse_stride[1] + i * p.dlse_stride[2]];
    }
    delta[(b * p.heads_q + h) * p.seqlen_q + row] = acc;
  }
}

// Loads rows [first, first + count) of a strided [S, D] matrix as fp32 into smem rows of `ld`.
template <typename T>
__device__ void load_rows(float* dst, int ld, const T* base, int64_t stride, int64_t first, int count, int D,
                          float scale = 1.0f) {
  for (int idx = threadIdx.x; idx < count * D; idx += blockDim.x) {
    const int r = idx / D, d = idx % D;
    dst[r * ld + d] = to_float(base[(first + r) * stride + d]) * scale;
  }
}

// Pass 2: dK and dV for 16 keys.
template <typename T, int kChunks>
__global__ void __launch_bounds__(kThreads) dkdv_kernel(const BlockSparseAttentionBackwardParams p,
                                                        const float* delta) {
  extern __shared__ float smem[];
  const int D = static_cast<int>(p.head_dim);
  const int ld = D + 1;
  float* ks = smem;                 // [kTileRows, D]
  float* vs = ks + kTileRows * D;   // [kTileRows, D]
  float* qs = vs + kTileRows * D;   // [kSubTile, D + 1]
  float* dos = qs + kSubTile * ld;  // [kSubTile, D + 1]
  float* lse2 = dos + kSubTile * ld;
  float* dl = lse2 + kSubTile;

  const int64_t b = blockIdx.z, hk = blockIdx.y;
  const SequenceSpan seq = p.sequence(b);
  // A tile never straddles two key blocks (block_k may be smaller than or not a multiple of 16):
  // every key of it shares one mask column.
  const int64_t tiles_per_block = (p.block_k + kTileRows - 1) / kTileRows;
  const int64_t kb = blockIdx.x / tiles_per_block;
  const int64_t key0 = kb * p.block_k + (blockIdx.x % tiles_per_block) * kTileRows;
  const int64_t block_end = min(kb * p.block_k + p.block_k, seq.k_len);
  if (key0 >= block_end) return;
  const int keys = static_cast<int>(min(static_cast<int64_t>(kTileRows), block_end - key0));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t group = p.group_size();
  const int64_t causal_offset = seq.k_len - seq.q_len;
  const int64_t seq_query_blocks = (seq.q_len + p.block_q - 1) / p.block_q;
  const float score_scale = p.scale * kLog2e;

  const T* kg = token_ptr<const T>(p.k, p.k_stride, b, hk, seq.k_start);
  const T* vg = token_ptr<const T>(p.v, p.v_stride, b, hk, seq.k_start);
  load_rows(ks, D, kg, p.k_stride[2], key0, keys, D);
  load_rows(vs, D, vg, p.v_stride[2], key0, keys, D);

  float dk[kRowsPerWarp][kChunks], dv[kRowsPerWarp][kChunks];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
#pragma unroll
    for (int c = 0; c < kChunks; ++c) dk[rr][c] = dv[rr][c] = 0.0f;
  }

  for (int64_t g = 0; g < group; ++g) {
    const int64_t h = hk * group + g;
    const T* qg = token_ptr<const T>(p.q, p.q_stride, b, h, seq.q_start);
    const T* dog =
        token_ptr<const T>(p.dout, p.dout_stride, b, h, seq.q_start);
    const float* lg =
        token_ptr<const float>(p.lse, p.lse_stride, b, h, seq.q_start);
    const float* dg = delta + (b * p.heads_q + h) * p.seqlen_q;
    for (int64_t qb = 0; qb < seq_query_blocks; ++qb) {
      if (!p.block_enabled(b, h, qb, kb)) continue;
      const int64_t q_begin = qb * p.block_q, q_end = min(q_begin + p.block_q, seq.q_len);
      if (p.causal && key0 > q_end - 1 + causal_offset) continue;  // every key here is in the future
      for (int64_t q0 = q_begin; q0 < q_end; q0 += kSubTile) {
        const int queries = static_cast<int>(min(static_cast<int64_t>(kSubTile), q_end - q0));
        __syncthreads();  // previous sub-tile consumed (and K/V rows written)
        load_rows(qs, ld, qg, p.q_stride[2], q0, queries, D);
        load_rows(dos, ld, dog, p.dout_stride[2], q0, queries, D);
        for (int j = threadIdx.x; j < queries; j += blockDim.x) {
          lse2[j] = lg[(q0 + j) * p.lse_stride[2]] * kLog2e;
          dl[j] = dg[q0 + j];
        }
        __syncthreads();
#pragma unroll
        for (int rr = 0; rr < kRowsPerWarp; ++rr) {
          const int kr = warp * kRowsPerWarp + rr;
          if (kr >= keys) break;
          const int64_t key = key0 + kr;
          const int64_t query = q0 + lane;
          const bool visible = lane < queries && (!p.causal || key <= query + causal_offset) &&
                               lse2[min(lane, queries - 1)] != -INFINITY;
          float prob = 0.0f, ds = 0.0f;
          if (visible) {
            float s = 0.0f, dp = 0.0f;
            for (int d = 0; d < D; ++d) {
              s += qs[lane * ld + d] * ks[kr * D + d];
              dp += dos[lane * ld + d] * vs[kr * D + d];
            }
            prob = exp2f(s * score_scale - lse2[lane]);
            ds = prob * (dp - dl[lane]) * p.scale;
          }
          for (int j = 0; j < queries; ++j) {
            const float pj = __shfl_sync(kFullMask, prob, j);
            const float dsj = __shfl_sync(kFullMask, ds, j);
#pragma unroll
            for (int c = 0; c < kChunks; ++c) {
              const int d = lane + 32 * c;
              if (d < D) {
                dv[rr][c] += pj * dos[j * ld + d];
                dk[rr][c] += dsj * qs[j * ld + d];
              }
            }
          }
        }
      }
    }
  }

  T* dkg = token_ptr<T>(p.dk, p.dk_stride, b, hk, seq.k_start);
  T* dvg = token_ptr<T>(p.dv, p.dv_stride, b, hk, seq.k_start);
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int kr = warp * kRowsPerWarp + rr;
    if (kr >= keys) break;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int d = lane + 32 * c;
      if (d < D) {
        dkg[(key0 + kr) * p.dk_stride[2] + d] = from_float<T>(dk[rr][c]);
        dvg[(key0 + kr) * p.dv_stride[2] + d] = from_float<T>(dv[rr][c]);
      }
    }
  }
}

// Pass 3: dQ for 16 query rows.
template <typename T, int kChunks>
__global__ void __launch_bounds__(kThreads) dq_kernel(const BlockSparseAttentionBackwardParams p, const float* delta) {
  extern __shared__ float smem[];
  const int D = static_cast<int>(p.head_dim);
  const int ld = D + 1;
  float* qs = smem;                   // [kTileRows, D]
  float* dos = qs + kTileRows * D;    // [kTileRows, D]
  float* ks = dos + kTileRows * D;    // [kSubTile, D + 1]
  float* vs = ks + kSubTile * ld;     // [kSubTile, D + 1]

  const int64_t b = blockIdx.z, h = blockIdx.y;
  const SequenceSpan seq = p.sequence(b);
  const int64_t tiles_per_block = (p.block_q + kTileRows - 1) / kTileRows;
  const int64_t qb = blockIdx.x / tiles_per_block;
  const int64_t i0 = qb * p.block_q + (blockIdx.x % tiles_per_block) * kTileRows;
  const int64_t block_end = min(qb * p.block_q + p.block_q, seq.q_len);
  const int rows = static_cast<int>(min(static_cast<int64_t>(kTileRows), block_end - i0));
  if (rows <= 0) return;
  const int64_t hk = h / p.group_size();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t causal_offset = seq.k_len - seq.q_len;
  const float score_scale = p.scale * kLog2e;
  const int64_t seq_key_blocks = (seq.k_len + p.block_k - 1) / p.block_k;

  const T* qg = token_ptr<const T>(p.q, p.q_stride, b, h, seq.q_start);
  const T* dog =
      token_ptr<const T>(p.dout, p.dout_stride, b, h, seq.q_start);
  const T* kg = token_ptr<const T>(p.k, p.k_stride, b, hk, seq.k_start);
  const T* vg = token_ptr<const T>(p.v, p.v_stride, b, hk, seq.k_start);
  const float* lg =
      token_ptr<const float>(p.lse, p.lse_stride, b, h, seq.q_start);
  const float* dg = delta + (b * p.heads_q + h) * p.seqlen_q;
  load_rows(qs, D, qg, p.q_stride[2], i0, rows, D);
  load_rows(dos, D, dog, p.dout_stride[2], i0, rows, D);

  float dq[kRowsPerWarp][kChunks];
  float lse2[kRowsPerWarp], dl[kRowsPerWarp];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int r = min(warp * kRowsPerWarp + rr, rows - 1);
    lse2[rr] = lg[(i0 + r) * p.lse_stride[2]] * kLog2e;
    dl[rr] = dg[i0 + r];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) dq[rr][c] = 0.0f;
  }

  const int64_t last_row = i0 + rows - 1;
  for (int64_t kb = 0; kb < seq_key_blocks; ++kb) {
    if (!p.block_enabled(b, h, qb, kb)) continue;
    const int64_t j_begin = kb * p.block_k;
    int64_t j_end = min(j_begin + p.block_k, seq.k_len);
    if (p.causal) j_end = min(j_end, last_row + causal_offset + 1);
    for (int64_t jt = j_begin; jt < j_end; jt += kSubTile) {
      const int keys = static_cast<int>(min(static_cast<int64_t>(kSubTile), j_end - jt));
      __syncthreads();
      load_rows(ks, ld, kg, p.k_stride[2], jt, keys, D);
      load_rows(vs, ld, vg, p.v_stride[2], jt, keys, D);
      __syncthreads();
#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr) {
        const int r = warp * kRowsPerWarp + rr;
        if (r >= rows) break;
        const bool visible =
            lane < keys && (!p.causal || jt + lane <= i0 + r + causal_offset) && lse2[rr] != -INFINITY;
        float ds = 0.0f;
        if (visible) {
          float s = 0.0f, dp = 0.0f;
          for (int d = 0; d < D; ++d) {
            s += qs[r * D + d] * ks[lane * ld + d];
            dp += dos[r * D + d] * vs[lane * ld + d];
          }
          ds = exp2f(s * score_scale - lse2[rr]) * (dp - dl[rr]) * p.scale;
        }
        for (int j = 0; j < keys; ++j) {
          const float dsj = __shfl_sync(kFullMask, ds, j);
#pragma unroll
          for (int c = 0; c < kChunks; ++c) {
            const int d = lane + 32 * c;
            if (d < D) dq[rr][c] += dsj * ks[j * ld + d];
          }
        }
      }
    }
  }

  float* dqg = token_ptr<float>(p.dq_accum, p.dq_stride, b, h, seq.q_start);
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int r = warp * kRowsPerWarp + rr;
    if (r >= rows) break;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int d = lane + 32 * c;
      if (d < D) dqg[(i0 + r) * p.dq_stride[2] + d] = dq[rr][c];
    }
  }
}

template <typename T, int kChunks>
void launch(const BlockSparseAttentionBackwardParams& p, cudaStream_t stream, const float* delta) {
  const int64_t D = p.head_dim;
  const size_t dkdv_smem = sizeof(float) * (2 * kTileRows * D + 2 * kSubTile * (D + 1) + 2 * kSubTile);
  auto dkdv = dkdv_kernel<T, kChunks>;
  allow_shared_memory(dkdv, dkdv_smem, "block_sparse_attention_backward");
  const int64_t tiles_per_key_block = (p.block_k + kTileRows - 1) / kTileRows;
  const dim3 dkdv_grid(static_cast<unsigned>(p.num_key_blocks() * tiles_per_key_block),
                       static_cast<unsigned>(p.heads_kv), static_cast<unsigned>(p.batch));
  dkdv<<<dkdv_grid, kThreads, dkdv_smem, stream>>>(p, delta);
  check(cudaGetLastError(), "block_sparse_attention_backward", "dK/dV launch");

  const size_t dq_smem = sizeof(float) * (2 * kTileRows * D + 2 * kSubTile * (D + 1));
  auto dq = dq_kernel<T, kChunks>;
  allow_shared_memory(dq, dq_smem, "block_sparse_attention_backward");
  const int64_t tiles_per_block = (p.block_q + kTileRows - 1) / kTileRows;
  const dim3 dq_grid(static_cast<unsigned>(p.num_query_blocks() * tiles_per_block), static_cast<unsigned>(p.heads_q),
                     static_cast<unsigned>(p.batch));
  dq<<<dq_grid, kThreads, dq_smem, stream>>>(p, delta);
  check(cudaGetLastError(), "block_sparse_attention_backward", "dQ launch");
}

template <typename T>
void launch_for_head_dim(const BlockSparseAttentionBackwardParams& p, cudaStream_t stream, const float* delta) {
  switch ((p.head_dim + 31) / 32) {
    case 1: return launch<T, 1>(p, stream, delta);
    case 2: return launch<T, 2>(p, stream, delta);
    case 3: return launch<T, 3>(p, stream, delta);
    case 4: return launch<T, 4>(p, stream, delta);
    case 5: return launch<T, 5>(p, stream, delta);
    case 6: return launch<T, 6>(p, stream, delta);
    case 7: return launch<T, 7>(p, stream, delta);
    case 8: return launch<T, 8>(p, stream, delta);
    default: break;
  }
  throw std::invalid_argument("block_sparse_attention_backward (CUDA): head_dim must be <= 256");
}

}  // namespace

void backward_delta(const BlockSparseAttentionBackwardParams& p, cudaStream_t stream, float* delta) {
  const dim3 grid(static_cast<unsigned>((p.seqlen_q + kWarps - 1) / kWarps), static_cast<unsigned>(p.heads_q),
                  static_cast<unsigned>(p.batch));
  switch (p.dtype) {
    case DType::kFloat32:
      delta_kernel<float><<<grid, kThreads, 0, stream>>>(p, delta);
      break;
    case DType::kFloat16:
      delta_kernel<__half><<<grid, kThreads, 0, stream>>>(p, delta);
      break;
    case DType::kBFloat16:
      delta_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(p, delta);
      break;
  }
  check(cudaGetLastError(), "block_sparse_attention_backward", "delta launch");
}

void backward_simt(const BlockSparseAttentionBackwardParams& p, cudaStream_t stream, const float* delta) {
  switch (p.dtype) {
    case DType::kFloat32:
      return launch_for_head_dim<float>(p, stream, delta);
    case DType::kFloat16:
      return launch_for_head_dim<__half>(p, stream, delta);
    case DType::kBFloat16:
      return launch_for_head_dim<__nv_bfloat16>(p, stream, delta);
  }
}

}  // namespace kc::cuda_detail
