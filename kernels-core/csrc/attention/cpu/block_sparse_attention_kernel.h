// Block-sparse attention forward on the CPU (FlashAttention-style online softmax).
//
// Compiled once per instruction set (see common/cpu_vec.h). Work is split into items
// (batch, query head, query block); each item walks the key blocks its mask row enables and
// keeps a running max m, running sum l and an fp32 output accumulator O:
//
//   S = (Q * scale * log2 e) K^T          [bq, bk]   register-blocked micro-kernel
//   m' = max(m, rowmax S);  P = 2^(S - m')          masked entries are exactly 0
//   l = l 2^(m - m') + rowsum P;  O = O 2^(m - m') + P V
//
// and finally writes O / l and lse = (m + log2 l) ln 2. K is packed once per key/value head into
// fp32 blocks transposed to [D, bk] (so the Q K^T kernel streams vectors over keys) and V into
// fp32 [bk, D] rows, so 16-bit inputs are converted once rather than once per query block.
// Packing works on chunks of heads so its memory stays bounded.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

#include "attention/block_sparse_attention_params.h"
#include "common/cpu_vec.h"

namespace kc::cpu::KC_ISA {
namespace attention_detail {

constexpr int kW = kVecWidth;
// Register blocking: kRows query rows x kCols vectors of accumulators (24 of 32 zmm on AVX-512,
// 12 of 16 ymm/xmm otherwise, leaving room for the operand loads).
constexpr int kRows = 6;
constexpr int kCols = kVecWidth == 16 ? 4 : 2;
constexpr int64_t kPackBudgetBytes = int64_t{256} << 20;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
// Local helpers instead of std::min/std::max: nothing here may be shared with the other ISA builds.
inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

inline float* alloc_floats(int64_t n) {
  const size_t bytes = static_cast<size_t>(round_up(n * static_cast<int64_t>(sizeof(float)), 64));
  return static_cast<float*>(std::aligned_alloc(64, bytes == 0 ? 64 : bytes));
}

// s[r, c] = sum_d q[r, d] * kt[d, c] for R rows and C vectors of columns.
template <int R, int C>
inline void qk_tile(const float* q, int64_t ldq, const float* kt, int64_t ldk, int64_t depth, float* s,
                    int64_t lds) {
  vfloat acc[R][C] = {};
  for (int64_t d = 0; d < depth; ++d) {
    vfloat kv[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) kv[c] = vload(kt + d * ldk + c * kW);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const vfloat qv = vbroadcast(q[r * ldq + d]);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) acc[r][c] += qv * kv[c];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) vstore(s + r * lds + c * kW, acc[r][c]);
  }
}

// o[r, :] += sum_j p[r, j] * v[j, :] for R rows and C vectors of output columns.
template <int R, int C>
inline void pv_tile(const float* p, int64_t ldp, const float* v, int64_t ldv, int64_t keys, float* o,
                    int64_t ldo) {
  vfloat acc[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = vload(o + r * ldo + c * kW);
  }
  for (int64_t j = 0; j < keys; ++j) {
    vfloat vv[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) vv[c] = vload(v + j * ldv + c * kW);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const vfloat pv = vbroadcast(p[r * ldp + j]);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) acc[r][c] += pv * vv[c];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) vstore(o + r * ldo + c * kW, acc[r][c]);
  }
}

// Sweeps rows x vectors with the full register tile and covers the edges with smaller tiles.
inline void qk_block(const float* q, int64_t ldq, const float* kt, int64_t ldk, int64_t depth, float* s,
                     int64_t lds, int64_t rows, int64_t vectors) {
  int64_t c = 0;
  for (; c + kCols <= vectors; c += kCols) {
    int64_t r = 0;
    for (; r + kRows <= rows; r += kRows)
      qk_tile<kRows, kCols>(q + r * ldq, ldq, kt + c * kW, ldk, depth, s + r * lds + c * kW, lds);
    for (; r < rows; ++r) qk_tile<1, kCols>(q + r * ldq, ldq, kt + c * kW, ldk, depth, s + r * lds + c * kW, lds);
  }
  for (; c < vectors; ++c) {
    int64_t r = 0;
    for (; r + kRows <= rows; r += kRows)
      qk_tile<kRows, 1>(q + r * ldq, ldq, kt + c * kW, ldk, depth, s + r * lds + c * kW, lds);
    for (; r < rows; ++r) qk_tile<1, 1>(q + r * ldq, ldq, kt + c * kW, ldk, depth, s + r * lds + c * kW, lds);
  }
}

inline void pv_block(const float* p, int64_t ldp, const float* v, int64_t ldv, int64_t keys, float* o,
                     int64_t ldo, int64_t rows, int64_t vectors) {
  int64_t c = 0;
  for (; c + kCols <= vectors; c += kCols) {
    int64_t r = 0;
    for (; r + kRows <= rows; r += kRows)
      pv_tile<kRows, kCols>(p + r * ldp, ldp, v + c * kW, ldv, keys, o + r * ldo + c * kW, ldo);
    for (; r < rows; ++r) pv_tile<1, kCols>(p + r * ldp, ldp, v + c * kW, ldv, keys, o + r * ldo + c * kW, ldo);
  }
  for (; c < vectors; ++c) {
    int64_t r = 0;
    for (; r + kRows <= rows; r += kRows)
      pv_tile<kRows, 1>(p + r * ldp, ldp, v + c * kW, ldv, keys, o + r * ldo + c * kW, ldo);
    for (; r < rows; ++r) pv_tile<1, 1>(p + r * ldp, ldp, v + c * kW, ldv, keys, o + r * ldo + c * kW, ldo);
  }
}

// Geometry shared by the packing and compute phases.
struct Layout {
  int64_t D, Dv;          // head dim, and padded to whole vectors (V and O rows)
  int64_t bq, bk, bk_pad;  // block sizes; bk padded to whole vectors (rows of packed K^T)
  int64_t nqb, nkb;
  int64_t kt_block, v_block;  // floats per packed key block
  int64_t head_floats;        // floats of packed K and V per key/value head

  explicit Layout(const BlockSparseAttentionParams& p)
      : D(p.head_dim),
        Dv(round_up(p.head_dim, kW)),
        bq(p.block_q),
        bk(p.block_k),
        bk_pad(round_up(p.block_k, kW)),
        nqb(p.num_query_blocks()),
        nkb(p.num_key_blocks()),
        kt_block(D * bk_pad),
        v_block(bk * Dv),
        head_floats(nkb * (kt_block + v_block)) {}
};

// Packs key block kb of one key/value head: kt [D, bk_pad] (transposed) and v [bk, Dv], fp32,
// zero outside the sequence and in the padding.
template <typename T>
void pack_kv_block(const BlockSparseAttentionParams& p, const Layout& L, int64_t b, int64_t hk, int64_t kb,
                   float* kt, float* vp, float* row) {
  using S = typename T::storage;
  const S* kbase = reinterpret_cast<const S*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1];
  const S* vbase = reinterpret_cast<const S*>(p.v) + b * p.v_stride[0] + hk * p.v_stride[1];
  const int64_t j0 = kb * L.bk;
  const int64_t keys = imin(L.bk, p.seqlen_k - j0);
  std::memset(kt, 0, sizeof(float) * L.kt_block);
  std::memset(vp, 0, sizeof(float) * L.v_block);
  for (int64_t c = 0; c < keys; ++c) {
    T::load(kbase + (j0 + c) * p.k_stride[2], row, L.D);
    for (int64_t d = 0; d < L.D; ++d) kt[d * L.bk_pad + c] = row[d];
    T::load(vbase + (j0 + c) * p.v_stride[2], vp + c * L.Dv, L.D);
  }
}

struct Scratch {
  float* q = nullptr;  // [bq, D]   queries times scale * log2(e)
  float* s = nullptr;  // [bq, bk_pad] scores, then probabilities
  float* o = nullptr;  // [bq, Dv]  output accumulator
  float* m = nullptr;  // [bq]      running max (log2 domain)
  float* l = nullptr;  // [bq]      running sum
  bool ok = false;

  explicit Scratch(const Layout& L) {
    q = alloc_floats(L.bq * L.D);
    s = alloc_floats(L.bq * L.bk_pad);
    o = alloc_floats(L.bq * L.Dv);
    m = alloc_floats(L.bq);
    l = alloc_floats(L.bq);
    ok = q && s && o && m && l;
  }
  ~Scratch() {
    std::free(q);
    std::free(s);
    std::free(o);
    std::free(m);
    std::free(l);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

// Masks scores outside [0, visible) to -inf and folds the block into the running softmax state.
// Returns false when the row sees no key of this block (its probabilities are then all zero).
inline bool softmax_update_row(float* srow, int64_t bk_pad, int64_t visible, float* m, float* l, float* orow,
                               int64_t Dv) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  if (visible <= 0) {
    std::memset(srow, 0, sizeof(float) * bk_pad);
    return false;
  }
  for (int64_t c = visible; c < bk_pad; ++c) srow[c] = kNegInf;
  vfloat vmax = vbroadcast(kNegInf);
  for (int64_t c = 0; c < bk_pad; c += kW) {
    const vfloat x = vload(srow + c);
    vmax = x > vmax ? x : vmax;
  }
  const float row_max = hmax(vmax);
  const float m_new = row_max > *m ? row_max : *m;
  const vfloat m_vec = vbroadcast(m_new);
  vfloat vsum = {};
  for (int64_t c = 0; c < bk_pad; c += kW) {
    const vfloat pexp = vexp2_nonpositive(vload(srow + c) - m_vec);
    vstore(srow + c, pexp);
    vsum += pexp;
  }
  const float alpha = std::exp2(*m - m_new);  // 0 on the first visited block (m = -inf)
  *l = *l * alpha + hsum(vsum);
  *m = m_new;
  if (alpha != 1.0f) {
    const vfloat a = vbroadcast(alpha);
    for (int64_t c = 0; c < Dv; c += kW) vstore(orow + c, vload(orow + c) * a);
  }
  return true;
}

// One work item: query block qb of query head h in batch b.
template <typename T>
void attend_query_block(const BlockSparseAttentionParams& p, const Layout& L, const float* packed_head,
                        int64_t b, int64_t h, int64_t qb, Scratch& w) {
  using S = typename T::storage;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int64_t i0 = qb * L.bq;
  const int64_t rows = imin(L.bq, p.seqlen_q - i0);
  const int64_t causal_offset = p.seqlen_k - p.seqlen_q;  // query i sees keys j <= i + offset
  const float q_scale = p.scale * kLog2e;

  const S* qbase = reinterpret_cast<const S*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
  for (int64_t r = 0; r < rows; ++r) {
    float* qrow = w.q + r * L.D;
    T::load(qbase + (i0 + r) * p.q_stride[2], qrow, L.D);
    for (int64_t d = 0; d < L.D; ++d) qrow[d] *= q_scale;
    w.m[r] = kNegInf;
    w.l[r] = 0.0f;
  }
  std::memset(w.o, 0, sizeof(float) * rows * L.Dv);

  for (int64_t kb = 0; kb < L.nkb; ++kb) {
    if (!p.block_enabled(b, h, qb, kb)) continue;
    const int64_t j0 = kb * L.bk;
    const int64_t keys = imin(L.bk, p.seqlen_k - j0);
    if (p.causal && j0 > i0 + rows - 1 + causal_offset) break;  // this and later blocks are in the future
    const float* kt = packed_head + kb * L.kt_block;
    const float* vp = packed_head + L.nkb * L.kt_block + kb * L.v_block;

    qk_block(w.q, L.D, kt, L.bk_pad, L.D, w.s, L.bk_pad, rows, L.bk_pad / kW);
    bool any = false;
    for (int64_t r = 0; r < rows; ++r) {
      int64_t visible = keys;
      if (p.causal) visible = imin(visible, i0 + r + causal_offset - j0 + 1);
      any |= softmax_update_row(w.s + r * L.bk_pad, L.bk_pad, visible, w.m + r, w.l + r, w.o + r * L.Dv, L.Dv);
    }
    if (any) pv_block(w.s, L.bk_pad, vp, L.Dv, keys, w.o, L.Dv, rows, L.Dv / kW);
  }

  S* obase = reinterpret_cast<S*>(p.out) + b * p.out_stride[0] + h * p.out_stride[1];
  float* lse = reinterpret_cast<float*>(p.lse) + (b * p.heads_q + h) * p.seqlen_q + i0;
  for (int64_t r = 0; r < rows; ++r) {
    float* orow = w.o + r * L.Dv;
    const float l = w.l[r];
    // A row that sees no key at all returns zeros and lse = -inf (documented behaviour).
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int64_t d = 0; d < L.D; ++d) orow[d] *= inv;
    T::store(orow, obase + (i0 + r) * p.out_stride[2], L.D);
    lse[r] = l > 0.0f ? (w.m[r] + std::log2(l)) * kLn2 : kNegInf;
  }
}

template <typename T>
void forward(const BlockSparseAttentionParams& p, int num_threads) {
  const Layout L(p);
  const int64_t group = p.group_size();
  const int64_t kv_heads = p.batch * p.heads_kv;
  const int64_t head_bytes = L.head_floats * static_cast<int64_t>(sizeof(float));
  const int64_t heads_per_chunk = imax(1, imin(kv_heads, kPackBudgetBytes / head_bytes));

  float* packed = alloc_floats(heads_per_chunk * L.head_floats);
  if (packed == nullptr) throw std::bad_alloc();
  bool scratch_failed = false;

  for (int64_t first = 0; first < kv_heads; first += heads_per_chunk) {
    const int64_t chunk = imin(heads_per_chunk, kv_heads - first);
#pragma omp parallel num_threads(num_threads)
    {
      float* row = alloc_floats(L.D);
#pragma omp for schedule(static)
      for (int64_t t = 0; t < chunk * L.nkb; ++t) {
        if (row == nullptr) continue;
        const int64_t local = t / L.nkb, kb = t % L.nkb;
        const int64_t bh = first + local;
        float* head = packed + local * L.head_floats;
        pack_kv_block<T>(p, L, bh / p.heads_kv, bh % p.heads_kv, kb, head + kb * L.kt_block,
                         head + L.nkb * L.kt_block + kb * L.v_block, row);
      }
      if (row == nullptr) {
#pragma omp atomic write
        scratch_failed = true;
      }
      std::free(row);

      Scratch w(L);
      if (!w.ok) {
#pragma omp atomic write
        scratch_failed = true;
      }
      // Items ordered (kv head, query head in its group, query block); dynamic scheduling
      // balances causal and sparse rows whose cost differs per block.
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < chunk * group * L.nqb; ++t) {
        if (!w.ok) continue;
        const int64_t local = t / (group * L.nqb);
        const int64_t rest = t % (group * L.nqb);
        const int64_t bh = first + local;
        const int64_t b = bh / p.heads_kv;
        const int64_t h = (bh % p.heads_kv) * group + rest / L.nqb;
        attend_query_block<T>(p, L, packed + local * L.head_floats, b, h, rest % L.nqb, w);
      }
    }
  }
  std::free(packed);
  if (scratch_failed) throw std::bad_alloc();
}

}  // namespace attention_detail

inline void block_sparse_attention_forward(const BlockSparseAttentionParams& p, int num_threads) {
  using namespace attention_detail;
  switch (p.dtype) {
    case DType::kFloat32:
      forward<F32>(p, num_threads);
      return;
    case DType::kFloat16:
      forward<F16>(p, num_threads);
      return;
    case DType::kBFloat16:
      forward<BF16>(p, num_threads);
      return;
  }
  throw std::invalid_argument("block_sparse_attention: unsupported dtype");
}

}  // namespace kc::cpu::KC_ISA
