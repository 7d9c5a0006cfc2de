// Decode attention, split pass, on tensor cores (sm_80 and newer).
//
// A CTA of 4 warps owns the (at most 16) query rows of one key/value head — the Sq new queries of
// every query head of its group — and one split of that head's key list. Each warp takes every
// fourth chunk of 32 candidate keys in the split: it compacts the chunk's valid positions with a
// ballot, gathers those K and V rows with cp.async into its own swizzled tiles, and runs
//   S = Q K^T (mma.sync m16n8k16, Q fragments in registers), online softmax, O += P V
// on its own running state. The 4 warp states are merged in shared memory and written as the
// split's partial result; decode_split.cuh's merge pass combines the splits.
// Taken for bf16/fp16, D = 64 or 128, group x Sq <= 16 and 16-byte aligned rows.
#include <cstdint>

#include "attention/cuda/attention_kernels.h"
#include "attention/cuda/cuda_common.cuh"
#include "attention/cuda/decode_split.cuh"
#include "attention/cuda/tensor_core.cuh"

namespace kc::cuda_detail {
namespace {
using namespace tc;
using decode::SplitLayout;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRows = 16;   // one m16 tile of query rows
constexpr int kChunk = 32;  // candidate keys per warp step

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) decode_split_sm80_kernel(const DecodeAttentionParams p, const SplitLayout L,
                                                                     float* ws) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int kDTiles = D / 8, kDSlices = D / 16, kKTiles = kChunk / 8;
  constexpr int kChunks16 = D / 8;  // 16-byte chunks per row
  extern __shared__ __align__(128) unsigned char smem_bytes[];
  T* sq = reinterpret_cast<T*>(smem_bytes);     // [16, D]
  T* sk = sq + kRows * D;                        // per warp [32, D]
  T* sv = sk + kWarps * kChunk * D;              // per warp [32, D]
  auto* positions = reinterpret_cast<int64_t*>(sv + kWarps * kChunk * D);  // per warp [32]

  const int64_t bh = blockIdx.z, split = blockIdx.y;
  const int64_t b = bh / p.heads_kv, hk = bh % p.heads_kv;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group_id = lane / 4, lane_in_group = lane % 4;
  const int rows = static_cast<int>(L.rows);
  const int64_t valid = p.valid_length(b);
  const int64_t total = p.num_keys(b, hk);
  const int64_t begin = split * L.keys_per_split, end = min(total, begin + L.keys_per_split);
  const float score_scale = p.scale * kLog2e;

  // Q rows r = (head in group, query): row r is query r % Sq of query head hk * group + r / Sq.
  for (int c = threadIdx.x; c < kRows * kChunks16; c += kThreads) {
    const int r = c / kChunks16, chunk = c % kChunks16;
    const bool real = r < rows;
    const int64_t h = hk * p.group_size() + (real ? r / p.seqlen_q : 0), i = real ? r % p.seqlen_q : 0;
    const T* src = token_ptr<const T>(p.q, p.q_stride, b, h, i);
    cp_async_16(sq + swizzled<D>(r, chunk), src + chunk * 8, real ? 16 : 0);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  uint32_t qf[kDSlices][4];
#pragma unroll
  for (int s = 0; s < kDSlices; ++s) load_a<T, D>(qf[s], sq, 0, s, lane);

  T* wk = sk + warp * kChunk * D;
  T* wv = sv + warp * kChunk * D;
  int64_t* wpos = positions + warp * kChunk;
  const T* kg = token_ptr<const T>(p.k, p.k_stride, b, hk, 0);
  const T* vg = token_ptr<const T>(p.v, p.v_stride, b, hk, 0);
  // This thread's two rows and the last cache position each may see (causal).
  const int my_row[2] = {group_id, group_id + 8};
  int64_t limit[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) limit[r] = p.causal ? valid - p.seqlen_q + my_row[r] % p.seqlen_q : INT64_MAX;

  float o[kDTiles][4];
#pragma unroll
  for (int t = 0; t < kDTiles; ++t) o[t][0] = o[t][1] = o[t][2] = o[t][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  for (int64_t j0 = begin + warp * kChunk; j0 < end; j0 += kWarps * kChunk) {
    // Compact this chunk's valid positions (lists may hold -1 or stale entries).
    const int64_t j = j0 + lane;
    const int64_t pos = j < end ? p.key_position(b, hk, j) : -1;
    const bool keep = pos >= 0 && pos < valid;
    const unsigned ballot = __ballot_sync(kFullMask, keep);
    const int keys = __popc(ballot);
    if (keys == 0) continue;
    if (keep) wpos[__popc(ballot & ((1u << lane) - 1))] = pos;
    __syncwarp();
    for (int c = lane; c < kChunk * kChunks16; c += 32) {
      const int row = c / kChunks16, chunk = c % kChunks16;
      const bool real = row < keys;
      const int64_t at = real ? wpos[row] : 0;
      cp_async_16(wk + swizzled<D>(row, chunk), kg + at * p.k_stride[2] + chunk * 8, real ? 16 : 0);
      cp_async_16(wv + swizzled<D>(row, chunk), vg + at * p.v_stride[2] + chunk * 8, real ? 16 : 0);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncwarp();

    float sacc[kKTiles][4];
    qk_scores<T, D>(sacc, qf, wk, lane);
#pragma unroll
    for (int t = 0; t < kKTiles; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = t * 8 + lane_in_group * 2 + (e & 1), r = e / 2;
        const bool visible = c < keys && wpos[min(c, keys - 1)] <= limit[r];
        sacc[t][e] = visible ? sacc[t][e] * score_scale : -INFINITY;
      }
    }
    online_softmax_update(sacc, o, m, l);
#pragma unroll
    for (int ks = 0; ks < kKTiles / 2; ++ks) {
      uint32_t pa[4];
      accumulators_to_a<T>(pa, sacc[2 * ks], sacc[2 * ks + 1]);
#pragma unroll
      for (int dp = 0; dp < kDTiles / 2; ++dp) {
        uint32_t vf[4];
        load_b<T, D>(vf, wv, ks * 16, dp, lane);
        mma_16816<T>(o[2 * dp], pa, vf[0], vf[1]);
        mma_16816<T>(o[2 * dp + 1], pa, vf[2], vf[3]);
      }
    }
    __syncwarp();  // the tiles and positions are rewritten by this warp's next chunk
  }

  // Merge the four warp states through shared memory (the K/V tiles are free now).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(kFullMask, l[r], 1);
    l[r] += __shfl_xor_sync(kFullMask, l[r], 2);
  }
  __syncthreads();
  float* so = reinterpret_cast<float*>(sk);  // [warp][16][D]
  float* sm = so + kWarps * kRows * D;       // [warp][16]
  float* sl = sm + kWarps * kRows;           // [warp][16]
#pragma unroll
  for (int r = 0; r < 2; ++r) {
#pragma unroll
    for (int t = 0; t < kDTiles; ++t) {
      const int d = t * 8 + lane_in_group * 2;
      so[(warp * kRows + my_row[r]) * D + d] = o[t][2 * r];
      so[(warp * kRows + my_row[r]) * D + d + 1] = o[t][2 * r + 1];
    }
    if (lane_in_group == 0) {
      sm[warp * kRows + my_row[r]] = m[r];
      sl[warp * kRows + my_row[r]] = l[r];
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < rows * (D + 2); idx += kThreads) {
    const int r = idx / (D + 2), d = idx % (D + 2);
    float mr = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mr = fmaxf(mr, sm[w * kRows + r]);
    float value = 0.0f;
    if (d == D) {
      value = mr;
    } else if (mr != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        if (sl[w * kRows + r] == 0.0f) continue;
        const float scale = exp2f(sm[w * kRows + r] - mr);
        value += (d == D + 1 ? sl[w * kRows + r] : so[(w * kRows + r) * D + d]) * scale;
      }
    }
    decode::split_state(ws, L, bh, split, r, D)[d] = value;
  }
#endif
}

template <typename T, int D>
void launch(const DecodeAttentionParams& p, const SplitLayout& L, cudaStream_t stream, float* ws) {
  const size_t tiles = sizeof(T) * (kRows * D + 2 * kWarps * kChunk * D) + sizeof(int64_t) * kWarps * kChunk;
  const size_t merge = sizeof(float) * (kWarps * kRows * D + 2 * kWarps * kRows);
  const size_t smem = tiles > merge + sizeof(T) * kRows * D ? tiles : merge + sizeof(T) * kRows * D;
  auto kernel = decode_split_sm80_kernel<T, D>;
  allow_shared_memory(kernel, smem, "decode_attention");
  const dim3 grid(1, static_cast<unsigned>(L.splits), static_cast<unsigned>(p.batch * p.heads_kv));
  kernel<<<grid, kThreads, smem, stream>>>(p, L, ws);
  check(cudaGetLastError(), "decode_attention", "split launch");
}

}  // namespace

bool decode_sm80_supports(const DecodeAttentionParams& p, int capability_major) {
#if !defined(KC_TENSOR_CORE_KERNELS)
  return false;  // built for architectures below sm_80 too: see CMakeLists.txt
#endif
  if (capability_major < 8) return false;
  if (p.dtype != DType::kBFloat16 && p.dtype != DType::kFloat16) return false;
  if (p.head_dim != 64 && p.head_dim != 128) return false;
  if (p.group_size() * p.seqlen_q > kRows) return false;
  return aligned_rows(p.q, p.q_stride, 2) && aligned_rows(p.k, p.k_stride, 2) && aligned_rows(p.v, p.v_stride, 2);
}

void decode_sm80(const DecodeAttentionParams& p, const SplitLayout& L, cudaStream_t stream, float* ws) {
  if (p.dtype == DType::kBFloat16) {
    if (p.head_dim == 64) return launch<__nv_bfloat16, 64>(p, L, stream, ws);
    return launch<__nv_bfloat16, 128>(p, L, stream, ws);
  }
  if (p.head_dim == 64) return launch<__half, 64>(p, L, stream, ws);
  return launch<__half, 128>(p, L, stream, ws);
}

}  // namespace kc::cuda_detail
