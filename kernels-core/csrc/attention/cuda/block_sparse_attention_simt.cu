// Block-sparse attention forward on CUDA: a portable SIMT kernel (fp32 math on CUDA cores) with
// the same semantics as the CPU kernel. It runs on every architecture in KC_CUDA_ARCHS, serves
// the inputs the tensor-core kernel does not take (fp32, head dims other than 64/128, blocks
// that are not multiples of 64, unaligned rows) and is the correctness baseline for it.
//
// One CTA of 4 warps owns a tile of 16 query rows inside one query block of one (batch, head);
// each warp owns 4 rows. For every enabled key block the CTA streams 32-key sub-tiles of K and V
// through shared memory (fp32): lane j scores key j for a row, the warp reduces the row max and
// sum with shuffles, and each lane accumulates the output columns d = lane + 32 c in registers.
#include "attention/cuda/attention_kernels.h"
#include "attention/cuda/cuda_common.cuh"

namespace kc::cuda_detail {
namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kTileRows = kWarps * kRowsPerWarp;
constexpr int kTileKeys = 32;

size_t shared_bytes(int64_t head_dim) {
  return sizeof(float) * (kTileRows * head_dim + kTileKeys * (head_dim + 1) + kTileKeys * head_dim);
}

// kChunks = ceil(D / 32): output columns per lane, kept in registers.
template <typename T, int kChunks>
__global__ void __launch_bounds__(kWarps * 32) block_sparse_attention_fwd_kernel(const BlockSparseAttentionParams p) {
  extern __shared__ float smem[];
  const int D = static_cast<int>(p.head_dim);
  const int ldk = D + 1;  // padded K rows: lanes read different banks
  float* qs = smem;                   // [kTileRows, D]
  float* ks = qs + kTileRows * D;     // [kTileKeys, D + 1]
  float* vs = ks + kTileKeys * ldk;   // [kTileKeys, D]

  const int64_t b = blockIdx.z, h = blockIdx.y;
  const SequenceSpan seq = p.sequence(b);
  const int64_t tiles_per_block = (p.block_q + kTileRows - 1) / kTileRows;
  const int64_t qb = blockIdx.x / tiles_per_block;
  const int64_t i0 = qb * p.block_q + (blockIdx.x % tiles_per_block) * kTileRows;  // within the sequence
  const int64_t block_end = min(qb * p.block_q + p.block_q, seq.q_len);
  const int rows = static_cast<int>(min(static_cast<int64_t>(kTileRows), block_end - i0));
  if (rows <= 0) return;  // past the end of this (shorter) sequence

  const int64_t hk = h / p.group_size();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t causal_offset = seq.k_len - seq.q_len;
  const float q_scale = p.scale * kLog2e;

  // Base pointers at the first token of this sequence.
  const T* qg = token_ptr<const T>(p.q, p.q_stride, b, h, seq.q_start);
  const T* kg = token_ptr<const T>(p.k, p.k_stride, b, hk, seq.k_start);
  const T* vg = token_ptr<const T>(p.v, p.v_stride, b, hk, seq.k_start);
  for (int idx = threadIdx.x; idx < rows * D; idx += blockDim.x) {
    const int r = idx / D, d = idx % D;
    qs[r * D + d] = to_float(qg[(i0 + r) * p.q_stride[2] + d]) * q_scale;
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

  const int64_t last_row = i0 + rows - 1;
  const int64_t seq_key_blocks = (seq.k_len + p.block_k - 1) / p.block_k;
  const int64_t candidates = p.row_length(b, h, qb);
  for (int64_t j = 0; j < candidates; ++j) {
    const int64_t kb = p.row_block(b, h, qb, j);
    if (kb < 0 || kb >= seq_key_blocks) continue;
    const int64_t j_begin = kb * p.block_k;
    int64_t j_end = min(j_begin + p.block_k, seq.k_len);
    if (p.causal) j_end = min(j_end, last_row + causal_offset + 1);
    if (j_end <= j_begin) continue;  // causal: entirely in the future

    for (int64_t jt = j_begin; jt < j_end; jt += kTileKeys) {
      const int keys = static_cast<int>(min(static_cast<int64_t>(kTileKeys), j_end - jt));
      __syncthreads();  // the previous sub-tile is consumed (and the Q tile is written)
      for (int idx = threadIdx.x; idx < keys * D; idx += blockDim.x) {
        const int c = idx / D, d = idx % D;
        ks[c * ldk + d] = to_float(kg[(jt + c) * p.k_stride[2] + d]);
        vs[c * D + d] = to_float(vg[(jt + c) * p.v_stride[2] + d]);
      }
      __syncthreads();

#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr) {
        const int r = warp * kRowsPerWarp + rr;
        if (r >= rows) break;
        const int64_t i = i0 + r;
        const bool visible = lane < keys && (!p.causal || jt + lane <= i + causal_offset);
        float s = -INFINITY;
        if (visible) {
          float dot = 0.0f;
          for (int d = 0; d < D; ++d) dot += qs[r * D + d] * ks[lane * ldk + d];
          s = dot;
        }
        warp_softmax_step(s, keys, vs, D, D, m[rr], l[rr], o[rr]);
      }
    }
  }

  T* og = token_ptr<T>(p.out, p.out_stride, b, h, seq.q_start);
  float* lse = token_ptr<float>(p.lse, p.lse_stride, b, h, seq.q_start);
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int r = warp * kRowsPerWarp + rr;
    if (r >= rows) break;
    const int64_t i = i0 + r;
    // A row that sees no key at all returns zeros and lse = -inf (documented behaviour).
    const float inv = l[rr] > 0.0f ? 1.0f / l[rr] : 0.0f;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int d = lane + 32 * c;
      if (d < D) og[i * p.out_stride[2] + d] = from_float<T>(o[rr][c] * inv);
    }
    if (lane == 0) lse[i * p.lse_stride[2]] = l[rr] > 0.0f ? (m[rr] + log2f(l[rr])) * kLn2 : -INFINITY;
  }
}

template <typename T, int kChunks>
void launch(const BlockSparseAttentionParams& p, cudaStream_t stream) {
  const size_t smem = shared_bytes(p.head_dim);
  auto kernel = block_sparse_attention_fwd_kernel<T, kChunks>;
  allow_shared_memory(kernel, smem, "block_sparse_attention");
  const int64_t tiles_per_block = (p.block_q + kTileRows - 1) / kTileRows;
  const dim3 grid(static_cast<unsigned>(p.num_query_blocks() * tiles_per_block), static_cast<unsigned>(p.heads_q),
                  static_cast<unsigned>(p.batch));
  kernel<<<grid, kWarps * 32, smem, stream>>>(p);
  check(cudaGetLastError(), "block_sparse_attention", "kernel launch");
}

template <typename T>
void launch_for_head_dim(const BlockSparseAttentionParams& p, cudaStream_t stream) {
  switch ((p.head_dim + 31) / 32) {
    case 1: return launch<T, 1>(p, stream);
    case 2: return launch<T, 2>(p, stream);
    case 3: return launch<T, 3>(p, stream);
    case 4: return launch<T, 4>(p, stream);
    case 5: return launch<T, 5>(p, stream);
    case 6: return launch<T, 6>(p, stream);
    case 7: return launch<T, 7>(p, stream);
    case 8: return launch<T, 8>(p, stream);
    default: break;
  }
  throw std::invalid_argument("block_sparse_attention (CUDA): head_dim must be <= 256");
}

}  // namespace

void forward_simt(const BlockSparseAttentionParams& p, cudaStream_t stream) {
  switch (p.dtype) {
    case DType::kFloat32:
      return launch_for_head_dim<float>(p, stream);
    case DType::kFloat16:
      return launch_for_head_dim<__half>(p, stream);
    case DType::kBFloat16:
      return launch_for_head_dim<__nv_bfloat16>(p, stream);
  }
  throw std::invalid_argument("block_sparse_attention (CUDA): unsupported dtype");
}

}  // namespace kc::cuda_detail
