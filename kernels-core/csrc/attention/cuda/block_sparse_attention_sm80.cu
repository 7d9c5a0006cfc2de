// Block-sparse attention forward on tensor cores (sm_80 and newer): FlashAttention-2 structure.
//
// A CTA of 4 warps owns 64 query rows (16 per warp) of one (batch, head) inside one query
// block. It walks the 64-key tiles of the key blocks its row enables (bool mask, index list or
// all), double-buffering K and V tiles in shared memory with cp.async so the next tile loads
// while the current one is multiplied:
//
//   S = Q K^T      mma.sync m16n8k16 (bf16/fp16 in, fp32 accumulate), Q fragments in registers
//   online softmax on the S accumulators (rows are shared by the 4 lanes of a quad)
//   O += P V       P re-packed from the S accumulators into A fragments without shared memory
//
// Shared-memory rows are stored with their 16-byte chunks XOR-swizzled by (row mod 8), so the
// ldmatrix reads of 8 rows hit 8 different bank groups. Supports D = 64 and 128, block sizes
// that are multiples of 64, 16-byte aligned rows; everything else goes to the SIMT kernel.
#include <cstdint>

#include "attention/cuda/attention_kernels.h"
#include "attention/cuda/cuda_common.cuh"
#include "attention/cuda/tensor_core.cuh"

namespace kc::cuda_detail {
namespace {
using namespace tc;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTileQ = 64;  // query rows per CTA
constexpr int kTileK = 64;  // keys per tile

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) forward_sm80_kernel(const BlockSparseAttentionParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int kDTiles = D / 8;    // n-tiles of the output
  constexpr int kDSlices = D / 16;  // k-slices of Q K^T
  constexpr int kKTiles = kTileK / 8;
  extern __shared__ __align__(128) unsigned char smem_bytes[];
  T* sq = reinterpret_cast<T*>(smem_bytes);
  T* sk = sq + kTileQ * D;       // 2 buffers
  T* sv = sk + 2 * kTileK * D;   // 2 buffers

  const QueryTile tile_rows(p);
  if (tile_rows.empty()) return;
  const int64_t b = tile_rows.b, h = tile_rows.h, hk = tile_rows.hk, row0 = tile_rows.row0;
  const SequenceSpan seq = tile_rows.seq;
  const int warp = tile_rows.warp, lane = tile_rows.lane, lane_in_group = tile_rows.lane_in_group;
  const int64_t causal_offset = tile_rows.causal_offset;
  const float score_scale = p.scale * kLog2e;

  const T* qg = token_ptr<const T>(p.q, p.q_stride, b, h, seq.q_start);
  const T* kg = token_ptr<const T>(p.k, p.k_stride, b, hk, seq.k_start);
  const T* vg = token_ptr<const T>(p.v, p.v_stride, b, hk, seq.k_start);

  load_tile<T, D>(sq, qg, p.q_stride[2], row0, seq.q_len);
  cp_async_commit();
  TileCursor cursor;
  int64_t tile = tile_rows.next_tile(p, cursor);
  if (tile >= 0) {
    load_tile<T, D>(sk, kg, p.k_stride[2], tile, seq.k_len);
    load_tile<T, D>(sv, vg, p.v_stride[2], tile, seq.k_len);
  }
  cp_async_commit();

  uint32_t qf[kDSlices][4];
  float o[kDTiles][4];
#pragma unroll
  for (int t = 0; t < kDTiles; ++t) o[t][0] = o[t][1] = o[t][2] = o[t][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  // The two rows this lane holds accumulators for (within the sequence).
  const int64_t (&my_row)[2] = tile_rows.my_row;

  bool first = true;
  int buffer = 0;
  while (tile >= 0) {
    const int64_t next = tile_rows.next_tile(p, cursor);
    if (next >= 0) {
      load_tile<T, D>(sk + (buffer ^ 1) * kTileK * D, kg, p.k_stride[2], next, seq.k_len);
      load_tile<T, D>(sv + (buffer ^ 1) * kTileK * D, vg, p.v_stride[2], next, seq.k_len);
    }
    cp_async_commit();
    cp_async_wait<1>();  // everything but the tile just requested has landed
    __syncthreads();
    const T* kt = sk + buffer * kTileK * D;
    const T* vt = sv + buffer * kTileK * D;

    if (first) {
#pragma unroll
      for (int s = 0; s < kDSlices; ++s) load_a<T, D>(qf[s], sq, warp * 16, s, lane);
      first = false;
    }

    // S = Q K^T for this warp's 16 rows and the tile's 64 keys.
    float sacc[kKTiles][4];
    qk_scores<T, D>(sacc, qf, kt, lane);

    // Scale to the log2 domain, mask, and fold into the running softmax.
#pragma unroll
    for (int t = 0; t < kKTiles; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t key = tile + t * 8 + lane_in_group * 2 + (e & 1);
        const int r = e / 2;
        const bool visible = key < seq.k_len && (!p.causal || key <= my_row[r] + causal_offset);
        sacc[t][e] = visible ? sacc[t][e] * score_scale : -INFINITY;
      }
    }
    online_softmax_update(sacc, o, m, l);

    // O += P V: P's accumulators become A fragments, V comes in through ldmatrix.trans.
#pragma unroll
    for (int ks = 0; ks < kKTiles / 2; ++ks) {
      uint32_t pf[4];
      accumulators_to_a<T>(pf, sacc[2 * ks], sacc[2 * ks + 1]);
#pragma unroll
      for (int dp = 0; dp < kDTiles / 2; ++dp) {
        uint32_t vf[4];
        load_b<T, D>(vf, vt, ks * 16, dp, lane);
        mma_16816<T>(o[2 * dp], pf, vf[0], vf[1]);
        mma_16816<T>(o[2 * dp + 1], pf, vf[2], vf[3]);
      }
    }
    __syncthreads();  // the next iteration refills this buffer
    tile = next;
    buffer ^= 1;
  }
  cp_async_wait<0>();

  write_output_rows<T, kDTiles>(p, tile_rows, o, m, l);
#endif
}

template <typename T, int D>
void launch(const BlockSparseAttentionParams& p, cudaStream_t stream) {
  const size_t smem = sizeof(T) * (kTileQ * D + 4 * kTileK * D);
  auto kernel = forward_sm80_kernel<T, D>;
  allow_shared_memory(kernel, smem, "block_sparse_attention");
  const dim3 grid(static_cast<unsigned>(p.num_query_blocks() * (p.block_q / kTileQ)),
                  static_cast<unsigned>(p.heads_q), static_cast<unsigned>(p.batch));
  kernel<<<grid, kThreads, smem, stream>>>(p);
  check(cudaGetLastError(), "block_sparse_attention", "kernel launch");
}

template <typename T>
void launch_for_head_dim(const BlockSparseAttentionParams& p, cudaStream_t stream) {
  if (p.head_dim == 64) return launch<T, 64>(p, stream);
  return launch<T, 128>(p, stream);
}

}  // namespace

bool forward_sm80_supports(const BlockSparseAttentionParams& p, int capability_major) {
#if !defined(KC_TENSOR_CORE_KERNELS)
  return false;  // built for architectures below sm_80 too: see CMakeLists.txt
#endif
  if (capability_major < 8) return false;
  if (p.dtype != DType::kBFloat16 && p.dtype != DType::kFloat16) return false;
  if (p.head_dim != 64 && p.head_dim != 128) return false;
  if (p.block_q % kTileQ != 0 || p.block_k % kTileK != 0) return false;
  // Output pairs are written as 32-bit words.
  if (p.out % 4 != 0 || p.out_stride[0] % 2 != 0 || p.out_stride[1] % 2 != 0 || p.out_stride[2] % 2 != 0) return false;
  return aligned_rows(p.q, p.q_stride, 2) && aligned_rows(p.k, p.k_stride, 2) && aligned_rows(p.v, p.v_stride, 2);
}

void forward_sm80(const BlockSparseAttentionParams& p, cudaStream_t stream) {
  if (p.dtype == DType::kBFloat16) return launch_for_head_dim<__nv_bfloat16>(p, stream);
  return launch_for_head_dim<__half>(p, stream);
}

}  // namespace kc::cuda_detail
