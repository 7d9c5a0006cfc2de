// Tensor-core building blocks for the sm_80+ attention kernels: PTX wrappers (cp.async,
// ldmatrix, mma.sync m16n8k16), register packing and XOR-swizzled shared-memory tiles.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 with 16-bit inputs), lane = 4 * group + t:
//   A 16x16 (row):  a0a1 = (group,     2t..2t+1)   a2a3 = (group + 8, 2t..)
//                   a4a5 = (group,     2t+8..)     a6a7 = (group + 8, 2t+8..)
//   B 16x8 (col):   b0b1 = (k 2t..2t+1, n group)   b2b3 = (k 2t+8.., n group)
//   C 16x8:         c0c1 = (group, 2t..2t+1)       c2c3 = (group + 8, 2t..2t+1)
// so the accumulators of two adjacent n-tiles are exactly the A fragment of one 16-wide k-slice.
#pragma once

#include <array>
#include <cstdint>

#include "attention/block_sparse_attention_params.h"
#include "attention/cuda/cuda_common.cuh"

namespace kc::cuda_detail::tc {

constexpr int kTile = 64;  // rows of every shared-memory tile

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte asynchronous copy; src_bytes = 0 fills the destination with zeros.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(dst)), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}

// c += a b for one m16n8k16 tile (a: 4 registers of 2 halves, b: 2 registers, c: 4 floats).
template <typename T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats -> one register of two 16-bit values (low half first).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Element offset of 16-byte chunk `chunk` of row `row` in a swizzled [rows, D] tile.
template <int D>
__device__ __forceinline__ int swizzled(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

// Copies rows [first, first + 64) of a [S, D] strided matrix into a swizzled tile; rows at or
// past `limit` are zero-filled. Called by every thread of the CTA.
template <typename T, int D>
__device__ __forceinline__ void load_tile(T* tile, const T* base, int64_t stride, int64_t first, int64_t limit) {
  constexpr int kChunks = D / 8;
  for (int c = threadIdx.x; c < kTile * kChunks; c += blockDim.x) {
    const int row = c / kChunks, chunk = c % kChunks;
    const bool valid = first + row < limit;
    const T* src = valid ? base + (first + row) * stride + chunk * 8 : base;
    cp_async_16(tile + swizzled<D>(row, chunk), src, valid ? 16 : 0);
  }
}

// Fragment loads from a swizzled [64, D] tile (`lane` = lane in the warp):
// A fragment of rows [row0, row0 + 16) and columns [16 s, 16 s + 16).
template <typename T, int D>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const T* tile, int row0, int s, int lane) {
  ldmatrix_x4(a, tile + swizzled<D>(row0 + lane % 16, 2 * s + lane / 16));
}

// B fragments of two n-tiles whose n index runs over tile rows [n0, n0 + 16) and whose k index
// runs over columns [16 s, 16 s + 16) (B = tile^T, e.g. K for Q K^T): b[0..1] for rows
// n0..n0+7, b[2..3] for n0+8..n0+15.
template <typename T, int D>
__device__ __forceinline__ void load_b_transposed(uint32_t (&b)[4], const T* tile, int n0, int s, int lane) {
  ldmatrix_x4(b, tile + swizzled<D>(n0 + (lane % 8) + (lane / 16) * 8, 2 * s + (lane / 8) % 2));
}

// B fragments whose k index runs over tile rows [k0, k0 + 16) and whose n index runs over
// columns [16 dp, 16 dp + 16) (B = tile, e.g. V for P V): b[0..1] for columns 16 dp..+7,
// b[2..3] for 16 dp + 8..+15.
template <typename T, int D>
__device__ __forceinline__ void load_b(uint32_t (&b)[4], const T* tile, int k0, int dp, int lane) {
  ldmatrix_x4_trans(b, tile + swizzled<D>(k0 + (lane % 8) + ((lane / 8) % 2) * 8, 2 * dp + lane / 16));
}

// The accumulators of n-tiles (2 j, 2 j + 1) as the A fragment of k-slice j.
template <typename T>
__device__ __forceinline__ void accumulators_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = pack2<T>(c0[0], c0[1]);
  a[1] = pack2<T>(c0[2], c0[3]);
  a[2] = pack2<T>(c1[0], c1[1]);
  a[3] = pack2<T>(c1[2], c1[3]);
}

// Walks the 64-key tiles of the key blocks a query-block row enables, skipping blocks outside
// the sequence and tiles entirely in the causal future.
struct TileCursor {
  int64_t candidate = 0, sub = 0;

  __device__ int64_t next(const BlockSparseAttentionParams& p, int64_t b, int64_t h, int64_t qb, int64_t candidates,
                          int64_t seq_key_blocks, int64_t k_len, int64_t last_visible_key) {
    const int64_t subs = p.block_k / kTile;
    while (candidate < candidates) {
      const int64_t kb = p.row_block(b, h, qb, candidate);
      const int64_t start = kb * p.block_k + sub * kTile;
      const bool block_ok = kb >= 0 && kb < seq_key_blocks;
      if (block_ok && start < k_len && start <= last_visible_key) {
        if (++sub == subs) {
          sub = 0;
          ++candidate;
        }
        return start;
      }
      sub = 0;  // the rest of this block is past the end or in the future
      ++candidate;
    }
    return -1;
  }
};

// Folds one tile of scores into the running softmax of this lane's two rows. Layout: the m16n8
// accumulators, entries e < 2 in row `group`, e >= 2 in row `group + 8`, a row spread over the 4
// lanes of a quad. `s` holds log2-domain scores with hidden entries at -inf and returns
// P = 2^(s - m); `o` is rescaled by the change of running max; `l` collects this lane's part of
// each row sum (reduce over the quad at the end).
template <int kKTiles, int kDTiles>
__device__ __forceinline__ void online_softmax_update(float (&s)[kKTiles][4], float (&o)[kDTiles][4], float (&m)[2],
                                                      float (&l)[2]) {
  float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int t = 0; t < kKTiles; ++t) {
#pragma unroll
    for (int e = 0; e < 4; ++e) tile_max[e / 2] = fmaxf(tile_max[e / 2], s[t][e]);
  }
  float alpha[2], m_use[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(kFullMask, tile_max[r], 1));
    tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(kFullMask, tile_max[r], 2));
    const float m_new = fmaxf(m[r], tile_max[r]);
    m_use[r] = m_new == -INFINITY ? 0.0f : m_new;  // a row with nothing visible yet stays at zero
    alpha[r] = exp2f(m[r] - m_use[r]);
    m[r] = m_new;
    l[r] *= alpha[r];
  }
#pragma unroll
  for (int t = 0; t < kDTiles; ++t) {
#pragma unroll
    for (int e = 0; e < 4; ++e) o[t][e] *= alpha[e / 2];
  }
#pragma unroll
  for (int t = 0; t < kKTiles; ++t) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[t][e] = exp2f(s[t][e] - m_use[e / 2]);
      l[e / 2] += s[t][e];
    }
  }
}

// The 64 query rows of one (batch, head) inside one query block that a tensor-core CTA owns
// (grid: query tiles x heads x batch), and the two rows this lane holds accumulators for.
struct QueryTile {
  int64_t b, h, hk, qb, row0;
  SequenceSpan seq;
  int64_t causal_offset, last_visible_key, seq_key_blocks, candidates;
  int warp, lane, group_id, lane_in_group;
  int64_t my_row[2];

  __device__ explicit QueryTile(const BlockSparseAttentionParams& p)
      : b(blockIdx.z), h(blockIdx.y), hk(h / p.group_size()), qb(blockIdx.x / (p.block_q / kTile)),
        row0(qb * p.block_q + (blockIdx.x % (p.block_q / kTile)) * kTile), seq(p.sequence(b)) {
    causal_offset = seq.k_len - seq.q_len;
    last_visible_key = p.causal ? min(row0 + kTile, seq.q_len) - 1 + causal_offset : INT64_MAX;
    seq_key_blocks = (seq.k_len + p.block_k - 1) / p.block_k;
    candidates = p.row_length(b, h, qb);
    warp = threadIdx.x / 32;
    lane = threadIdx.x % 32;
    group_id = lane / 4;
    lane_in_group = lane % 4;
    my_row[0] = row0 + warp * 16 + group_id;
    my_row[1] = my_row[0] + 8;
  }
  // A shorter sequence of a variable-length batch has no rows here.
  __device__ bool empty() const { return row0 >= seq.q_len; }
  __device__ int64_t next_tile(const BlockSparseAttentionParams& p, TileCursor& cursor) const {
    return cursor.next(p, b, h, qb, candidates, seq_key_blocks, seq.k_len, last_visible_key);
  }
};

// S[16 rows, 8 kKTiles keys] = Q K^T for one warp: Q as A fragments, K rows [0, 8 kKTiles) of `k`.
template <typename T, int D, int kKTiles>
__device__ __forceinline__ void qk_scores(float (&s)[kKTiles][4], const uint32_t (&qf)[D / 16][4], const T* k,
                                          int lane) {
#pragma unroll
  for (int t = 0; t < kKTiles; ++t) s[t][0] = s[t][1] = s[t][2] = s[t][3] = 0.0f;
#pragma unroll
  for (int slice = 0; slice < D / 16; ++slice) {
#pragma unroll
    for (int pair = 0; pair < kKTiles / 2; ++pair) {
      uint32_t kf[4];
      load_b_transposed<T, D>(kf, k, pair * 16, slice, lane);
      mma_16816<T>(s[2 * pair], qf[slice], kf[0], kf[1]);
      mma_16816<T>(s[2 * pair + 1], qf[slice], kf[2], kf[3]);
    }
  }
}

// Forward epilogue: reduce the row sums over the quad, write O / l (as T) and lse (natural log);
// rows that saw no key get zeros and -inf.
template <typename T, int kDTiles>
__device__ __forceinline__ void write_output_rows(const BlockSparseAttentionParams& p, const QueryTile& t,
                                                  const float (&o)[kDTiles][4], const float (&m)[2], float (&l)[2]) {
  T* og = token_ptr<T>(p.out, p.out_stride, t.b, t.h, t.seq.q_start);
  float* lg = token_ptr<float>(p.lse, p.lse_stride, t.b, t.h, t.seq.q_start);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(kFullMask, l[r], 1);
    l[r] += __shfl_xor_sync(kFullMask, l[r], 2);
    if (t.my_row[r] >= t.seq.q_len) continue;
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    T* orow = og + t.my_row[r] * p.out_stride[2];
#pragma unroll
    for (int n = 0; n < kDTiles; ++n) {
      const int d = n * 8 + t.lane_in_group * 2;
      *reinterpret_cast<uint32_t*>(orow + d) = pack2<T>(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
    }
    if (t.lane_in_group == 0) {
      lg[t.my_row[r] * p.lse_stride[2]] = l[r] > 0.0f ? (m[r] + log2f(l[r])) * kLn2 : -INFINITY;
    }
  }
}

// True when `address` and every stride (in elements of `element_bytes`) keep 16-byte alignment.
inline bool aligned_rows(std::uintptr_t address, const std::array<int64_t, 3>& stride, int64_t element_bytes) {
  if (address % 16 != 0) return false;
  for (const int64_t s : stride) {
    if ((s * element_bytes) % 16 != 0) return false;
  }
  return true;
}

}  // namespace kc::cuda_detail::tc
