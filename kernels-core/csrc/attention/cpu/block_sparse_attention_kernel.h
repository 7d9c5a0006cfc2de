// Block-sparse attention forward on the CPU (FlashAttention-style online softmax).
//
// Work is split into items (batch, query head, query block); each item walks the key blocks its
// row enables (bool mask, index list, or all) and keeps a running max m, running sum l and an
// fp32 output accumulator O:
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

#include <cstdint>
#include <cstring>
#include <new>

#include "attention/block_sparse_attention_params.h"
#include "attention/cpu/attention_tiles.h"

namespace kc::cpu::KC_ISA {
namespace attention_detail {

constexpr int64_t kPackBudgetBytes = int64_t{256} << 20;

// Geometry shared by the packing and compute phases.
struct Layout {
  int64_t D, Dv;           // head dim, and padded to whole vectors (V and O rows)
  int64_t bq, bk, bk_pad;  // block sizes; bk padded to whole vectors (rows of packed K^T)
  int64_t nqb, nkb;        // block counts of the longest sequence
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
  const SequenceSpan seq = p.sequence(b);
  const S* kbase = reinterpret_cast<const S*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1];
  const S* vbase = reinterpret_cast<const S*>(p.v) + b * p.v_stride[0] + hk * p.v_stride[1];
  const int64_t j0 = kb * L.bk;
  const int64_t keys = imin(L.bk, seq.k_len - j0);
  std::memset(kt, 0, sizeof(float) * L.kt_block);
  std::memset(vp, 0, sizeof(float) * L.v_block);
  for (int64_t c = 0; c < keys; ++c) {
    T::load(kbase + (seq.k_start + j0 + c) * p.k_stride[2], row, L.D);
    for (int64_t d = 0; d < L.D; ++d) kt[d * L.bk_pad + c] = row[d];
    T::load(vbase + (seq.k_start + j0 + c) * p.v_stride[2], vp + c * L.Dv, L.D);
  }
}

struct Scratch {
  FloatBuffer q;  // [bq, D]      queries times scale * log2(e)
  FloatBuffer s;  // [bq, bk_pad] scores, then probabilities
  FloatBuffer o;  // [bq, Dv]     output accumulator
  FloatBuffer m;  // [bq]         running max (log2 domain)
  FloatBuffer l;  // [bq]         running sum

  explicit Scratch(const Layout& L)
      : q(L.bq * L.D), s(L.bq * L.bk_pad), o(L.bq * L.Dv), m(L.bq), l(L.bq) {}
  bool ok() const { return q.ok() && s.ok() && o.ok() && m.ok() && l.ok(); }
};

// One work item: query block qb of query head h in batch b.
template <typename T>
void attend_query_block(const BlockSparseAttentionParams& p, const Layout& L, const float* packed_head,
                        int64_t b, int64_t h, int64_t qb, Scratch& w) {
  using S = typename T::storage;
  const SequenceSpan seq = p.sequence(b);
  const int64_t i0 = qb * L.bq;
  const int64_t rows = imin(L.bq, seq.q_len - i0);
  if (rows <= 0) return;  // a shorter sequence of a variable-length batch
  const int64_t seq_key_blocks = (seq.k_len + L.bk - 1) / L.bk;
  const int64_t causal_offset = seq.k_len - seq.q_len;  // query i sees keys j <= i + offset
  const float q_scale = p.scale * kLog2e;

  const S* qbase = reinterpret_cast<const S*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
  for (int64_t r = 0; r < rows; ++r) {
    float* qrow = w.q.get() + r * L.D;
    T::load(qbase + (seq.q_start + i0 + r) * p.q_stride[2], qrow, L.D);
    for (int64_t d = 0; d < L.D; ++d) qrow[d] *= q_scale;
    w.m.get()[r] = kNegInf;
    w.l.get()[r] = 0.0f;
  }
  std::memset(w.o.get(), 0, sizeof(float) * rows * L.Dv);

  const int64_t candidates = p.row_length(b, h, qb);
  for (int64_t j = 0; j < candidates; ++j) {
    const int64_t kb = p.row_block(b, h, qb, j);
    if (kb < 0 || kb >= seq_key_blocks) continue;
    const int64_t j0 = kb * L.bk;
    if (p.causal && j0 > i0 + rows - 1 + causal_offset) continue;  // entirely in the future
    const int64_t keys = imin(L.bk, seq.k_len - j0);
    const float* kt = packed_head + kb * L.kt_block;
    const float* vp = packed_head + L.nkb * L.kt_block + kb * L.v_block;

    qk_block(w.q.get(), L.D, kt, L.bk_pad, L.D, w.s.get(), L.bk_pad, rows, L.bk_pad / kW);
    bool any = false;
    for (int64_t r = 0; r < rows; ++r) {
      int64_t visible = keys;
      if (p.causal) visible = imin(visible, i0 + r + causal_offset - j0 + 1);
      any |= softmax_update_row(w.s.get() + r * L.bk_pad, L.bk_pad, visible, w.m.get() + r, w.l.get() + r,
                                w.o.get() + r * L.Dv, L.Dv);
    }
    if (any) pv_block(w.s.get(), L.bk_pad, 1, vp, L.Dv, keys, w.o.get(), L.Dv, rows, L.Dv / kW);
  }

  S* obase = reinterpret_cast<S*>(p.out) + b * p.out_stride[0] + h * p.out_stride[1];
  float* lbase = reinterpret_cast<float*>(p.lse) + b * p.lse_stride[0] + h * p.lse_stride[1];
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = seq.q_start + i0 + r;
    finish_row<T>(w.o.get() + r * L.Dv, w.m.get()[r], w.l.get()[r], L.D, obase + i * p.out_stride[2],
                  lbase + i * p.lse_stride[2]);
  }
}

template <typename T>
void forward(const BlockSparseAttentionParams& p, int num_threads) {
  const Layout L(p);
  const int64_t group = p.group_size();
  const int64_t kv_heads = p.batch * p.heads_kv;
  const int64_t head_bytes = L.head_floats * static_cast<int64_t>(sizeof(float));
  const int64_t heads_per_chunk = imax(1, imin(kv_heads, kPackBudgetBytes / head_bytes));

  FloatBuffer packed(heads_per_chunk * L.head_floats);
  if (!packed.ok()) throw std::bad_alloc();
  bool scratch_failed = false;

  for (int64_t first = 0; first < kv_heads; first += heads_per_chunk) {
    const int64_t chunk = imin(heads_per_chunk, kv_heads - first);
#pragma omp parallel num_threads(num_threads)
    {
      FloatBuffer row(L.D);
#pragma omp for schedule(static)
      for (int64_t t = 0; t < chunk * L.nkb; ++t) {
        if (!row.ok()) continue;
        const int64_t local = t / L.nkb, kb = t % L.nkb;
        const int64_t bh = first + local;
        const int64_t b = bh / p.heads_kv;
        if (kb * L.bk >= p.sequence(b).k_len) continue;  // past the end of a shorter sequence
        float* head = packed.get() + local * L.head_floats;
        pack_kv_block<T>(p, L, b, bh % p.heads_kv, kb, head + kb * L.kt_block,
                         head + L.nkb * L.kt_block + kb * L.v_block, row.get());
      }

      Scratch w(L);
      if (!w.ok() || !row.ok()) {
#pragma omp atomic write
        scratch_failed = true;
      }
      // Items ordered (kv head, query head in its group, query block); dynamic scheduling
      // balances causal and sparse rows whose cost differs per block.
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < chunk * group * L.nqb; ++t) {
        if (!w.ok()) continue;
        const int64_t local = t / (group * L.nqb);
        const int64_t rest = t % (group * L.nqb);
        const int64_t bh = first + local;
        const int64_t b = bh / p.heads_kv;
        const int64_t h = (bh % p.heads_kv) * group + rest / L.nqb;
        attend_query_block<T>(p, L, packed.get() + local * L.head_floats, b, h, rest % L.nqb, w);
      }
    }
  }
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
