// Block-sparse attention backward on tensor cores (sm_80 and newer), deterministic: no atomics.
//
// After the delta pass (delta_i = dO_i . O_i - dlse_i, shared with the SIMT path):
//
// dK/dV kernel (kv-major): a CTA of 4 warps owns 64 keys (16 per warp) of one (batch, kv head),
//   keeps them in shared memory and walks every query head of the group and every 64-query tile
//   of the query blocks whose mask enables the key block. Per tile, with P recomputed from lse:
//     S^T = K Q^T,  P^T = 2^(S^T scale log2e - lse log2e),  dP^T = V dO^T,
//     dS^T = scale P^T (dP^T - delta),  dV += P^T dO,  dK += dS^T Q
//   P^T and dS^T go from accumulators to A fragments in registers, as P does in the forward.
// dQ kernel (q-major): a CTA owns 64 query rows and walks the enabled 64-key tiles like the
//   forward:  S = Q K^T, P, dP = dO V^T, dS = scale P (dP - delta),  dQ += dS K.
// Taken under the same conditions as the tensor-core forward (bf16/fp16, D 64/128, blocks that
// are multiples of 64, 16-byte aligned rows).
#include <cstdint>

#include "attention/cuda/attention_kernels.h"
#include "attention/cuda/cuda_common.cuh"
#include "attention/cuda/tensor_core.cuh"

namespace kc::cuda_detail {
namespace {
using namespace tc;

constexpr int kThreads = 128;

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) dkdv_sm80_kernel(const BlockSparseAttentionBackwardParams p,
                                                             const float* delta) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int kDTiles = D / 8, kDSlices = D / 16, kQTiles = kTile / 8;
  extern __shared__ __align__(128) unsigned char smem_bytes[];
  T* sk = reinterpret_cast<T*>(smem_bytes);
  T* sv = sk + kTile * D;
  T* sq = sv + kTile * D;
  T* sdo = sq + kTile * D;
  float* s_lse2 = reinterpret_cast<float*>(sdo + kTile * D);
  float* s_delta = s_lse2 + kTile;

  const int64_t b = blockIdx.z, hk = blockIdx.y;
  const SequenceSpan seq = p.sequence(b);
  const int64_t key0 = static_cast<int64_t>(blockIdx.x) * kTile;
  if (key0 >= seq.k_len) return;
  const int64_t kb = key0 / p.block_k;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group_id = lane / 4, lane_in_group = lane % 4;
  const int64_t group = p.group_size();
  const int64_t causal_offset = seq.k_len - seq.q_len;
  const int64_t seq_query_blocks = (seq.q_len + p.block_q - 1) / p.block_q;
  const float score_scale = p.scale * kLog2e;

  const T* kg = token_ptr<const T>(p.k, p.k_stride, b, hk, seq.k_start);
  const T* vg = token_ptr<const T>(p.v, p.v_stride, b, hk, seq.k_start);
  load_tile<T, D>(sk, kg, p.k_stride[2], key0, seq.k_len);
  load_tile<T, D>(sv, vg, p.v_stride[2], key0, seq.k_len);
  cp_async_commit();

  float dk[kDTiles][4], dv[kDTiles][4];
#pragma unroll
  for (int t = 0; t < kDTiles; ++t) {
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[t][e] = dv[t][e] = 0.0f;
  }
  const int64_t my_key[2] = {key0 + warp * 16 + group_id, key0 + warp * 16 + group_id + 8};

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
      const int64_t q_end = min((qb + 1) * p.block_q, seq.q_len);
      for (int64_t q0 = qb * p.block_q; q0 < q_end; q0 += kTile) {
        if (p.causal && key0 > min(q0 + kTile, q_end) - 1 + causal_offset) continue;  // all in the future
        __syncthreads();  // the previous query tile is consumed
        load_tile<T, D>(sq, qg, p.q_stride[2], q0, seq.q_len);
        load_tile<T, D>(sdo, dog, p.dout_stride[2], q0, seq.q_len);
        cp_async_commit();
        if (threadIdx.x < kTile) {
          const int64_t i = q0 + threadIdx.x;
          const float lse = i < seq.q_len ? lg[i * p.lse_stride[2]] : -INFINITY;
          // +inf makes P exactly 0 for padding rows and rows that saw no key.
          s_lse2[threadIdx.x] = lse == -INFINITY ? INFINITY : lse * kLog2e;
          s_delta[threadIdx.x] = i < seq.q_len ? dg[i] : 0.0f;
        }
        cp_async_wait<0>();
        __syncthreads();

        float st[kQTiles][4], dpt[kQTiles][4];
#pragma unroll
        for (int t = 0; t < kQTiles; ++t) {
#pragma unroll
          for (int e = 0; e < 4; ++e) st[t][e] = dpt[t][e] = 0.0f;
        }
#pragma unroll
        for (int s = 0; s < kDSlices; ++s) {
          uint32_t ka[4], va[4];
          load_a<T, D>(ka, sk, warp * 16, s, lane);
          load_a<T, D>(va, sv, warp * 16, s, lane);
#pragma unroll
          for (int pair = 0; pair < kQTiles / 2; ++pair) {
            uint32_t qf[4], dof[4];
            load_b_transposed<T, D>(qf, sq, pair * 16, s, lane);
            load_b_transposed<T, D>(dof, sdo, pair * 16, s, lane);
            mma_16816<T>(st[2 * pair], ka, qf[0], qf[1]);
            mma_16816<T>(st[2 * pair + 1], ka, qf[2], qf[3]);
            mma_16816<T>(dpt[2 * pair], va, dof[0], dof[1]);
            mma_16816<T>(dpt[2 * pair + 1], va, dof[2], dof[3]);
          }
        }
#pragma unroll
        for (int t = 0; t < kQTiles; ++t) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int col = t * 8 + lane_in_group * 2 + (e & 1);
            const int64_t key = my_key[e / 2], query = q0 + col;
            const bool visible = key < seq.k_len && (!p.causal || key <= query + causal_offset);
            const float prob = visible ? exp2f(st[t][e] * score_scale - s_lse2[col]) : 0.0f;
            st[t][e] = prob;
            dpt[t][e] = prob * (dpt[t][e] - s_delta[col]) * p.scale;
          }
        }
#pragma unroll
        for (int ks = 0; ks < kQTiles / 2; ++ks) {
          uint32_t pa[4], dsa[4];
          accumulators_to_a<T>(pa, st[2 * ks], st[2 * ks + 1]);
          accumulators_to_a<T>(dsa, dpt[2 * ks], dpt[2 * ks + 1]);
#pragma unroll
          for (int dp = 0; dp < kDTiles / 2; ++dp) {
            uint32_t dob[4], qb4[4];
            load_b<T, D>(dob, sdo, ks * 16, dp, lane);
            load_b<T, D>(qb4, sq, ks * 16, dp, lane);
            mma_16816<T>(dv[2 * dp], pa, dob[0], dob[1]);
            mma_16816<T>(dv[2 * dp + 1], pa, dob[2], dob[3]);
            mma_16816<T>(dk[2 * dp], dsa, qb4[0], qb4[1]);
            mma_16816<T>(dk[2 * dp + 1], dsa, qb4[2], qb4[3]);
          }
        }
      }
    }
  }
  cp_async_wait<0>();

  T* dkg = token_ptr<T>(p.dk, p.dk_stride, b, hk, seq.k_start);
  T* dvg = token_ptr<T>(p.dv, p.dv_stride, b, hk, seq.k_start);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (my_key[r] >= seq.k_len) continue;
#pragma unroll
    for (int t = 0; t < kDTiles; ++t) {
      const int d = t * 8 + lane_in_group * 2;
      *reinterpret_cast<uint32_t*>(dkg + my_key[r] * p.dk_stride[2] + d) = pack2<T>(dk[t][2 * r], dk[t][2 * r + 1]);
      *reinterpret_cast<uint32_t*>(dvg + my_key[r] * p.dv_stride[2] + d) = pack2<T>(dv[t][2 * r], dv[t][2 * r + 1]);
    }
  }
#endif
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) dq_sm80_kernel(const BlockSparseAttentionBackwardParams p,
                                                           const float* delta) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int kDTiles = D / 8, kDSlices = D / 16, kKTiles = kTile / 8;
  extern __shared__ __align__(128) unsigned char smem_bytes[];
  T* sq = reinterpret_cast<T*>(smem_bytes);
  T* sdo = sq + kTile * D;
  T* sk = sdo + kTile * D;
  T* sv = sk + kTile * D;

  const QueryTile tile_rows(p);
  if (tile_rows.empty()) return;
  const int64_t b = tile_rows.b, h = tile_rows.h, hk = tile_rows.hk, row0 = tile_rows.row0;
  const SequenceSpan seq = tile_rows.seq;
  const int warp = tile_rows.warp, lane = tile_rows.lane, lane_in_group = tile_rows.lane_in_group;
  const int64_t causal_offset = tile_rows.causal_offset;
  const float score_scale = p.scale * kLog2e;

  const T* qg = token_ptr<const T>(p.q, p.q_stride, b, h, seq.q_start);
  const T* dog =
      token_ptr<const T>(p.dout, p.dout_stride, b, h, seq.q_start);
  const T* kg = token_ptr<const T>(p.k, p.k_stride, b, hk, seq.k_start);
  const T* vg = token_ptr<const T>(p.v, p.v_stride, b, hk, seq.k_start);
  const float* lg =
      token_ptr<const float>(p.lse, p.lse_stride, b, h, seq.q_start);
  const float* dg = delta + (b * p.heads_q + h) * p.seqlen_q;
  load_tile<T, D>(sq, qg, p.q_stride[2], row0, seq.q_len);
  load_tile<T, D>(sdo, dog, p.dout_stride[2], row0, seq.q_len);
  cp_async_commit();

  const int64_t (&my_row)[2] = tile_rows.my_row;
  float lse2[2], dl[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float lse = my_row[r] < seq.q_len ? lg[my_row[r] * p.lse_stride[2]] : -INFINITY;
    lse2[r] = lse == -INFINITY ? INFINITY : lse * kLog2e;
    dl[r] = my_row[r] < seq.q_len ? dg[my_row[r]] : 0.0f;
  }
  // Q and dO stay in shared memory: their fragments are re-read per key tile, which keeps the
  // registers for the accumulators (holding both would spill at D = 128).
  float dq[kDTiles][4];
#pragma unroll
  for (int t = 0; t < kDTiles; ++t) dq[t][0] = dq[t][1] = dq[t][2] = dq[t][3] = 0.0f;

  TileCursor cursor;
  for (int64_t tile = tile_rows.next_tile(p, cursor); tile >= 0;
       tile = tile_rows.next_tile(p, cursor)) {
    __syncthreads();  // the previous key tile is consumed
    load_tile<T, D>(sk, kg, p.k_stride[2], tile, seq.k_len);
    load_tile<T, D>(sv, vg, p.v_stride[2], tile, seq.k_len);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();

    float s_acc[kKTiles][4], dp_acc[kKTiles][4];
#pragma unroll
    for (int t = 0; t < kKTiles; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s_acc[t][e] = dp_acc[t][e] = 0.0f;
    }
#pragma unroll
    for (int s = 0; s < kDSlices; ++s) {
      uint32_t qa[4], doa[4];
      load_a<T, D>(qa, sq, warp * 16, s, lane);
      load_a<T, D>(doa, sdo, warp * 16, s, lane);
#pragma unroll
      for (int pair = 0; pair < kKTiles / 2; ++pair) {
        uint32_t kf[4], vf[4];
        load_b_transposed<T, D>(kf, sk, pair * 16, s, lane);
        load_b_transposed<T, D>(vf, sv, pair * 16, s, lane);
        mma_16816<T>(s_acc[2 * pair], qa, kf[0], kf[1]);
        mma_16816<T>(s_acc[2 * pair + 1], qa, kf[2], kf[3]);
        mma_16816<T>(dp_acc[2 * pair], doa, vf[0], vf[1]);
        mma_16816<T>(dp_acc[2 * pair + 1], doa, vf[2], vf[3]);
      }
    }
#pragma unroll
    for (int t = 0; t < kKTiles; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        const int64_t key = tile + t * 8 + lane_in_group * 2 + (e & 1);
        const bool visible = key < seq.k_len && (!p.causal || key <= my_row[r] + causal_offset);
        const float prob = visible ? exp2f(s_acc[t][e] * score_scale - lse2[r]) : 0.0f;
        dp_acc[t][e] = prob * (dp_acc[t][e] - dl[r]) * p.scale;
      }
    }
#pragma unroll
    for (int ks = 0; ks < kKTiles / 2; ++ks) {
      uint32_t dsa[4];
      accumulators_to_a<T>(dsa, dp_acc[2 * ks], dp_acc[2 * ks + 1]);
#pragma unroll
      for (int dp = 0; dp < kDTiles / 2; ++dp) {
        uint32_t kb4[4];
        load_b<T, D>(kb4, sk, ks * 16, dp, lane);
        mma_16816<T>(dq[2 * dp], dsa, kb4[0], kb4[1]);
        mma_16816<T>(dq[2 * dp + 1], dsa, kb4[2], kb4[3]);
      }
    }
  }

  cp_async_wait<0>();  // a CTA that visited no key tile still has its Q/dO copies in flight

  float* dqg = token_ptr<float>(p.dq_accum, p.dq_stride, b, h, seq.q_start);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (my_row[r] >= seq.q_len) continue;
#pragma unroll
    for (int t = 0; t < kDTiles; ++t) {
      const int d = t * 8 + lane_in_group * 2;
      *reinterpret_cast<float2*>(dqg + my_row[r] * p.dq_stride[2] + d) = make_float2(dq[t][2 * r], dq[t][2 * r + 1]);
    }
  }
#endif
}

template <typename T, int D>
void launch(const BlockSparseAttentionBackwardParams& p, cudaStream_t stream, const float* delta) {
  const char* op = "block_sparse_attention_backward";
  const size_t dkdv_smem = sizeof(T) * 4 * kTile * D + sizeof(float) * 2 * kTile;
  auto dkdv = dkdv_sm80_kernel<T, D>;
  allow_shared_memory(dkdv, dkdv_smem, op);
  const dim3 dkdv_grid(static_cast<unsigned>((p.seqlen_k + kTile - 1) / kTile), static_cast<unsigned>(p.heads_kv),
                       static_cast<unsigned>(p.batch));
  dkdv<<<dkdv_grid, kThreads, dkdv_smem, stream>>>(p, delta);
  check(cudaGetLastError(), op, "dK/dV launch");

  const size_t dq_smem = sizeof(T) * 4 * kTile * D;
  auto dq = dq_sm80_kernel<T, D>;
  allow_shared_memory(dq, dq_smem, op);
  const dim3 dq_grid(static_cast<unsigned>(p.num_query_blocks() * (p.block_q / kTile)),
                     static_cast<unsigned>(p.heads_q), static_cast<unsigned>(p.batch));
  dq<<<dq_grid, kThreads, dq_smem, stream>>>(p, delta);
  check(cudaGetLastError(), op, "dQ launch");
}

template <typename T>
void launch_for_head_dim(const BlockSparseAttentionBackwardParams& p, cudaStream_t stream, const float* delta) {
  if (p.head_dim == 64) return launch<T, 64>(p, stream, delta);
  return launch<T, 128>(p, stream, delta);
}

bool pairs_aligned(std::uintptr_t address, const std::array<int64_t, 3>& stride, int64_t pair_elements) {
  if (address % 8 != 0) return false;
  for (const int64_t s : stride) {
    if (s % pair_elements != 0) return false;
  }
  return true;
}

}  // namespace

bool backward_sm80_supports(const BlockSparseAttentionBackwardParams& p, int capability_major) {
  if (!forward_sm80_supports(p, capability_major)) return false;
  // dK/dV are written as pairs of 16-bit values, dQ as float2.
  return aligned_rows(p.dout, p.dout_stride, 2) && pairs_aligned(p.dk, p.dk_stride, 2) &&
         pairs_aligned(p.dv, p.dv_stride, 2) && pairs_aligned(p.dq_accum, p.dq_stride, 2);
}

void backward_sm80(const BlockSparseAttentionBackwardParams& p, cudaStream_t stream, const float* delta) {
  if (p.dtype == DType::kBFloat16) return launch_for_head_dim<__nv_bfloat16>(p, stream, delta);
  return launch_for_head_dim<__half>(p, stream, delta);
}

}  // namespace kc::cuda_detail
