// Block-sparse attention backward on the CPU, from the forward's saved output and log-sum-exp.
//
// With P = 2^(S log2e - lse log2e) recomputed per enabled block (S = scale Q K^T) and
// Delta_i = dO_i . O_i - dlse_i:
//
//   dV += P^T dO      dP = dO V^T      dS = scale P (dP - Delta)
//   dK += dS^T Q      dQ += dS K
//
// Work items are (batch, key/value head, key block): an item owns its dK and dV block, summed
// over every query head of its group and every query block whose mask enables it, and writes
// them once. dQ rows are shared between items, so each item computes its dQ contribution
// locally and adds it to the float32 accumulator under a per-(batch, head, query block) spin
// lock; items start their walk over query blocks at different offsets so they rarely meet.
// Q, dO (fp32), lse and Delta are packed once per chunk of heads before the items run.
#pragma once

#include <cstdint>
#include <cstring>
#include <new>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "attention/block_sparse_attention_params.h"
#include "attention/cpu/attention_tiles.h"

namespace kc::cpu::KC_ISA {
namespace attention_backward_detail {
using namespace attention_detail;

constexpr int64_t kPackBudgetBytes = int64_t{256} << 20;

struct BackwardLayout {
  int64_t D, Dv, bq, bk, bk_pad, nqb, nkb, group;
  int64_t rows_pad;      // nqb * bq: packed query rows per query head
  int64_t qhead_floats;  // packed floats per query head: Q and dO [rows_pad, Dv], lse2 and Delta [rows_pad]

  explicit BackwardLayout(const BlockSparseAttentionParams& p)
      : D(p.head_dim),
        Dv(round_up(p.head_dim, kW)),
        bq(p.block_q),
        bk(p.block_k),
        bk_pad(round_up(p.block_k, kW)),
        nqb(p.num_query_blocks()),
        nkb(p.num_key_blocks()),
        group(p.group_size()),
        rows_pad(nqb * bq),
        qhead_floats(2 * rows_pad * Dv + 2 * rows_pad) {}
};

// Views into the packed area of one query head.
struct PackedQueryHead {
  float* q;      // [rows_pad, Dv] unscaled queries
  float* dout;   // [rows_pad, Dv]
  float* lse2;   // [rows_pad] lse * log2(e) (-inf for rows that saw no key)
  float* delta;  // [rows_pad] dO . O - dlse

  PackedQueryHead(float* base, const BackwardLayout& L)
      : q(base), dout(base + L.rows_pad * L.Dv), lse2(dout + L.rows_pad * L.Dv), delta(lse2 + L.rows_pad) {}
};

template <typename T>
void pack_query_block(const BlockSparseAttentionBackwardParams& p, const BackwardLayout& L, int64_t b, int64_t h,
                      int64_t qb, PackedQueryHead packed, float* orow) {
  using S = typename T::storage;
  const SequenceSpan seq = p.sequence(b);
  const int64_t i0 = qb * L.bq;
  const int64_t rows = imin(L.bq, seq.q_len - i0);
  const S* qg = reinterpret_cast<const S*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
  const S* og = reinterpret_cast<const S*>(p.out) + b * p.out_stride[0] + h * p.out_stride[1];
  const S* dog = reinterpret_cast<const S*>(p.dout) + b * p.dout_stride[0] + h * p.dout_stride[1];
  const float* lg = reinterpret_cast<const float*>(p.lse) + b * p.lse_stride[0] + h * p.lse_stride[1];
  const float* dlg = reinterpret_cast<const float*>(p.dlse);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = seq.q_start + i0 + r;
    float* qrow = packed.q + (i0 + r) * L.Dv;
    float* dorow = packed.dout + (i0 + r) * L.Dv;
    std::memset(qrow + L.D, 0, sizeof(float) * (L.Dv - L.D));
    std::memset(dorow + L.D, 0, sizeof(float) * (L.Dv - L.D));
    T::load(qg + i * p.q_stride[2], qrow, L.D);
    T::load(dog + i * p.dout_stride[2], dorow, L.D);
    T::load(og + i * p.out_stride[2], orow, L.D);
    float delta = 0.0f;
    for (int64_t d = 0; d < L.D; ++d) delta += dorow[d] * orow[d];
    if (dlg != nullptr) delta -= dlg[b * p.dlse_stride[0] + h * p.dlse_stride[1] + i * p.dlse_stride[2]];
    packed.delta[i0 + r] = delta;
    packed.lse2[i0 + r] = lg[i * p.lse_stride[2]] * kLog2e;
  }
}

struct BackwardScratch {
  FloatBuffer kt, vt;    // [D, bk_pad] K and V transposed
  FloatBuffer kr;        // [bk, Dv] K rows
  FloatBuffer s, dp;     // [bq, bk_pad] P, then dP and dS
  FloatBuffer dk, dv;    // [bk, Dv] accumulators of this key block
  FloatBuffer dq;        // [bq, Dv] this block's dQ contribution
  FloatBuffer row;       // [Dv]

  explicit BackwardScratch(const BackwardLayout& L)
      : kt(L.D * L.bk_pad), vt(L.D * L.bk_pad), kr(L.bk * L.Dv), s(L.bq * L.bk_pad), dp(L.bq * L.bk_pad),
        dk(L.bk * L.Dv), dv(L.bk * L.Dv), dq(L.bq * L.Dv), row(L.Dv) {}
  bool ok() const {
    return kt.ok() && vt.ok() && kr.ok() && s.ok() && dp.ok() && dk.ok() && dv.ok() && dq.ok() && row.ok();
  }
};

inline void spin_lock(uint8_t* lock) {
  while (__atomic_test_and_set(lock, __ATOMIC_ACQUIRE)) {
#if defined(__x86_64__) || defined(_M_X64)
    _mm_pause();
#endif
  }
}

inline void spin_unlock(uint8_t* lock) { __atomic_clear(lock, __ATOMIC_RELEASE); }

// P for one (query block, key block) pair: rows x bk_pad, zero where masked or padded.
inline void recompute_probabilities(float* s, int64_t bk_pad, int64_t rows, int64_t keys, int64_t first_visible_limit,
                                    bool causal, const float* lse2, float score_scale) {
  const vfloat sc = vbroadcast(score_scale);
  for (int64_t r = 0; r < rows; ++r) {
    float* srow = s + r * bk_pad;
    int64_t visible = keys;
    if (causal) visible = imin(visible, first_visible_limit + r);
    const float l2 = lse2[r];
    if (visible <= 0 || l2 == kNegInf) {
      std::memset(srow, 0, sizeof(float) * bk_pad);
      continue;
    }
    const vfloat lv = vbroadcast(l2);
    for (int64_t c = 0; c < bk_pad; c += kW) {
      // Masked scores are pushed below -126 so vexp2 returns exactly 0.
      vstore(srow + c, vexp2_nonpositive(vload(srow + c) * sc - lv));
    }
    for (int64_t c = visible; c < bk_pad; ++c) srow[c] = 0.0f;
  }
}

template <typename T>
void backward_key_block(const BlockSparseAttentionBackwardParams& p, const BackwardLayout& L, float* packed_kv_head,
                        int64_t b, int64_t hk, int64_t kb, BackwardScratch& w, uint8_t* locks) {
  using S = typename T::storage;
  const SequenceSpan seq = p.sequence(b);
  const int64_t j0 = kb * L.bk;
  const int64_t keys = imin(L.bk, seq.k_len - j0);
  if (keys <= 0) return;  // past the end of a shorter sequence: no rows to write
  const int64_t seq_query_blocks = (seq.q_len + L.bq - 1) / L.bq;
  const int64_t causal_offset = seq.k_len - seq.q_len;
  const float score_scale = p.scale * kLog2e;

  // Load this key block: K^T, V^T and K rows, fp32, zero padded.
  const S* kg = reinterpret_cast<const S*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1];
  const S* vg = reinterpret_cast<const S*>(p.v) + b * p.v_stride[0] + hk * p.v_stride[1];
  std::memset(w.kt.get(), 0, sizeof(float) * L.D * L.bk_pad);
  std::memset(w.vt.get(), 0, sizeof(float) * L.D * L.bk_pad);
  std::memset(w.kr.get(), 0, sizeof(float) * L.bk * L.Dv);
  for (int64_t c = 0; c < keys; ++c) {
    const int64_t j = seq.k_start + j0 + c;
    float* krow = w.kr.get() + c * L.Dv;
    T::load(kg + j * p.k_stride[2], krow, L.D);
    for (int64_t d = 0; d < L.D; ++d) w.kt.get()[d * L.bk_pad + c] = krow[d];
    T::load(vg + j * p.v_stride[2], w.row.get(), L.D);
    for (int64_t d = 0; d < L.D; ++d) w.vt.get()[d * L.bk_pad + c] = w.row.get()[d];
  }
  std::memset(w.dk.get(), 0, sizeof(float) * L.bk * L.Dv);
  std::memset(w.dv.get(), 0, sizeof(float) * L.bk * L.Dv);

  for (int64_t g = 0; g < L.group; ++g) {
    const int64_t h = hk * L.group + g;
    const PackedQueryHead packed(packed_kv_head + g * L.qhead_floats, L);
    for (int64_t t = 0; t < seq_query_blocks; ++t) {
      const int64_t qb = (t + kb) % seq_query_blocks;  // staggered start: fewer lock collisions
      if (!p.block_enabled(b, h, qb, kb)) continue;
      const int64_t i0 = qb * L.bq;
      const int64_t rows = imin(L.bq, seq.q_len - i0);
      if (p.causal && j0 > i0 + rows - 1 + causal_offset) continue;  // entirely in the future
      const float* q = packed.q + i0 * L.Dv;
      const float* dout = packed.dout + i0 * L.Dv;

      qk_block(q, L.Dv, w.kt.get(), L.bk_pad, L.D, w.s.get(), L.bk_pad, rows, L.bk_pad / kW);
      recompute_probabilities(w.s.get(), L.bk_pad, rows, keys, i0 + causal_offset - j0 + 1, p.causal,
                              packed.lse2 + i0, score_scale);
      pv_block(w.s.get(), 1, L.bk_pad, dout, L.Dv, rows, w.dv.get(), L.Dv, keys, L.Dv / kW);  // dV += P^T dO

      qk_block(dout, L.Dv, w.vt.get(), L.bk_pad, L.D, w.dp.get(), L.bk_pad, rows, L.bk_pad / kW);  // dP = dO V^T
      const vfloat scale = vbroadcast(p.scale);
      for (int64_t r = 0; r < rows; ++r) {
        const vfloat delta = vbroadcast(packed.delta[i0 + r]);
        float* dsrow = w.dp.get() + r * L.bk_pad;
        const float* prow = w.s.get() + r * L.bk_pad;
        for (int64_t c = 0; c < L.bk_pad; c += kW)
          vstore(dsrow + c, vload(prow + c) * (vload(dsrow + c) - delta) * scale);
      }
      pv_block(w.dp.get(), 1, L.bk_pad, q, L.Dv, rows, w.dk.get(), L.Dv, keys, L.Dv / kW);  // dK += dS^T Q

      std::memset(w.dq.get(), 0, sizeof(float) * rows * L.Dv);
      pv_block(w.dp.get(), L.bk_pad, 1, w.kr.get(), L.Dv, keys, w.dq.get(), L.Dv, rows, L.Dv / kW);  // dS K
      uint8_t* lock = locks + (b * p.heads_q + h) * L.nqb + qb;
      float* dqg = reinterpret_cast<float*>(p.dq_accum) + b * p.dq_stride[0] + h * p.dq_stride[1];
      spin_lock(lock);
      for (int64_t r = 0; r < rows; ++r) {
        float* dst = dqg + (seq.q_start + i0 + r) * p.dq_stride[2];
        const float* src = w.dq.get() + r * L.Dv;
        for (int64_t d = 0; d < L.D; ++d) dst[d] += src[d];
      }
      spin_unlock(lock);
    }
  }

  S* dkg = reinterpret_cast<S*>(p.dk) + b * p.dk_stride[0] + hk * p.dk_stride[1];
  S* dvg = reinterpret_cast<S*>(p.dv) + b * p.dv_stride[0] + hk * p.dv_stride[1];
  for (int64_t c = 0; c < keys; ++c) {
    const int64_t j = seq.k_start + j0 + c;
    T::store(w.dk.get() + c * L.Dv, dkg + j * p.dk_stride[2], L.D);
    T::store(w.dv.get() + c * L.Dv, dvg + j * p.dv_stride[2], L.D);
  }
}

template <typename T>
void backward(const BlockSparseAttentionBackwardParams& p, int num_threads) {
  const BackwardLayout L(p);
  const int64_t kv_heads = p.batch * p.heads_kv;
  const int64_t kv_head_floats = L.group * L.qhead_floats;
  const int64_t kv_head_bytes = kv_head_floats * static_cast<int64_t>(sizeof(float));
  const int64_t heads_per_chunk = imax(1, imin(kv_heads, kPackBudgetBytes / kv_head_bytes));

  FloatBuffer packed(heads_per_chunk * kv_head_floats);
  const int64_t num_locks = p.batch * p.heads_q * L.nqb;
  auto* locks = static_cast<uint8_t*>(std::calloc(static_cast<size_t>(num_locks), 1));
  if (!packed.ok() || locks == nullptr) {
    std::free(locks);
    throw std::bad_alloc();
  }
  bool scratch_failed = false;

  for (int64_t first = 0; first < kv_heads; first += heads_per_chunk) {
    const int64_t chunk = imin(heads_per_chunk, kv_heads - first);
#pragma omp parallel num_threads(num_threads)
    {
      BackwardScratch w(L);
      if (!w.ok()) {
#pragma omp atomic write
        scratch_failed = true;
      }
#pragma omp for schedule(static)
      for (int64_t t = 0; t < chunk * L.group * L.nqb; ++t) {
        if (!w.ok()) continue;
        const int64_t local = t / (L.group * L.nqb);
        const int64_t rest = t % (L.group * L.nqb);
        const int64_t g = rest / L.nqb, qb = rest % L.nqb;
        const int64_t bh = first + local;
        const int64_t b = bh / p.heads_kv;
        if (qb * L.bq >= p.sequence(b).q_len) continue;
        const PackedQueryHead head(packed.get() + (local * L.group + g) * L.qhead_floats, L);
        pack_query_block<T>(p, L, b, (bh % p.heads_kv) * L.group + g, qb, head, w.row.get());
      }
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < chunk * L.nkb; ++t) {
        if (!w.ok()) continue;
        const int64_t local = t / L.nkb, kb = t % L.nkb;
        const int64_t bh = first + local;
        backward_key_block<T>(p, L, packed.get() + local * kv_head_floats, bh / p.heads_kv, bh % p.heads_kv, kb,
                              w, locks);
      }
    }
  }
  std::free(locks);
  if (scratch_failed) throw std::bad_alloc();
}

}  // namespace attention_backward_detail

inline void block_sparse_attention_backward(const BlockSparseAttentionBackwardParams& p, int num_threads) {
  using namespace attention_backward_detail;
  switch (p.dtype) {
    case DType::kFloat32:
      backward<F32>(p, num_threads);
      return;
    case DType::kFloat16:
      backward<F16>(p, num_threads);
      return;
    case DType::kBFloat16:
      backward<BF16>(p, num_threads);
      return;
  }
  throw std::invalid_argument("block_sparse_attention_backward: unsupported dtype");
}

}  // namespace kc::cpu::KC_ISA
