// Decode attention on the CPU (split-K, as in flash-decoding).
//
// One work item is (batch, key/value head, split of the key list). It treats the Sq queries of
// every query head of the group as one block of rows, so each cached key is read once per
// group. Keys are gathered 64 at a time (by position list or contiguously) into the same
// transposed fp32 tiles the prefill kernel uses, scored, and folded into a running softmax.
// Each split writes its partial (max, sum, output); a second pass merges the splits.
#pragma once

#include <cstdint>
#include <cstring>
#include <new>

#include "attention/cpu/attention_tiles.h"
#include "attention/decode_attention_params.h"

namespace kc::cpu::KC_ISA {
namespace decode_detail {
using namespace attention_detail;

constexpr int64_t kChunkKeys = 64;
constexpr int64_t kMinKeysPerSplit = 512;

struct DecodeLayout {
  int64_t D, Dv, rows, splits, keys_per_split;
  explicit DecodeLayout(const DecodeAttentionParams& p, int num_threads)
      : D(p.head_dim), Dv(round_up(p.head_dim, kW)), rows(p.group_size() * p.seqlen_q) {
    // Enough splits to occupy every thread twice, but no split shorter than kMinKeysPerSplit.
    const int64_t longest = p.kv_indices != 0 ? p.num_indices : p.cache_len;
    const int64_t heads = p.batch * p.heads_kv;
    const int64_t wanted = (2 * num_threads + heads - 1) / heads;
    splits = imax(1, imin(wanted, (longest + kMinKeysPerSplit - 1) / kMinKeysPerSplit));
    keys_per_split = round_up((longest + splits - 1) / splits, kChunkKeys);
  }
};

struct DecodeScratch {
  FloatBuffer q, kt, v, s, row;
  int64_t* positions = nullptr;
  explicit DecodeScratch(const DecodeLayout& L)
      : q(L.rows * L.D), kt(L.D * kChunkKeys), v(kChunkKeys * L.Dv), s(L.rows * kChunkKeys), row(L.Dv),
        positions(static_cast<int64_t*>(std::malloc(sizeof(int64_t) * kChunkKeys))) {}
  ~DecodeScratch() { std::free(positions); }
  DecodeScratch(const DecodeScratch&) = delete;
  DecodeScratch& operator=(const DecodeScratch&) = delete;
  bool ok() const { return q.ok() && kt.ok() && v.ok() && s.ok() && row.ok() && positions != nullptr; }
};

// Partial results of one split: o [rows, Dv] (unnormalised), m and l [rows].
struct SplitState {
  float *o, *m, *l;
};

template <typename T>
void decode_split(const DecodeAttentionParams& p, const DecodeLayout& L, int64_t b, int64_t hk, int64_t split,
                  SplitState st, DecodeScratch& w) {
  using S = typename T::storage;
  const int64_t group = p.group_size();
  const int64_t valid = p.valid_length(b);
  const int64_t total = p.num_keys(b, hk);
  const int64_t begin = split * L.keys_per_split, end = imin(total, begin + L.keys_per_split);
  const float q_scale = p.scale * kLog2e;

  for (int64_t r = 0; r < L.rows; ++r) {
    const int64_t h = hk * group + r / p.seqlen_q, i = r % p.seqlen_q;
    const S* qrow = reinterpret_cast<const S*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1] + i * p.q_stride[2];
    float* dst = w.q.get() + r * L.D;
    T::load(qrow, dst, L.D);
    for (int64_t d = 0; d < L.D; ++d) dst[d] *= q_scale;
    st.m[r] = kNegInf;
    st.l[r] = 0.0f;
  }
  std::memset(st.o, 0, sizeof(float) * L.rows * L.Dv);

  const S* kbase = reinterpret_cast<const S*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1];
  const S* vbase = reinterpret_cast<const S*>(p.v) + b * p.v_stride[0] + hk * p.v_stride[1];
  for (int64_t j0 = begin; j0 < end;) {
    // Gather up to kChunkKeys valid positions.
    int64_t keys = 0;
    for (; j0 < end && keys < kChunkKeys; ++j0) {
      const int64_t pos = p.key_position(b, hk, j0);
      if (pos >= 0 && pos < valid) w.positions[keys++] = pos;
    }
    if (keys == 0) continue;
    std::memset(w.kt.get(), 0, sizeof(float) * L.D * kChunkKeys);
    for (int64_t c = 0; c < keys; ++c) {
      T::load(kbase + w.positions[c] * p.k_stride[2], w.row.get(), L.D);
      for (int64_t d = 0; d < L.D; ++d) w.kt.get()[d * kChunkKeys + c] = w.row.get()[d];
      std::memset(w.v.get() + c * L.Dv + L.D, 0, sizeof(float) * (L.Dv - L.D));
      T::load(vbase + w.positions[c] * p.v_stride[2], w.v.get() + c * L.Dv, L.D);
    }
    qk_block(w.q.get(), L.D, w.kt.get(), kChunkKeys, L.D, w.s.get(), kChunkKeys, L.rows, kChunkKeys / kW);
    bool any = false;
    for (int64_t r = 0; r < L.rows; ++r) {
      float* srow = w.s.get() + r * kChunkKeys;
      int64_t visible = keys;
      if (p.causal) {
        const int64_t limit = valid - p.seqlen_q + r % p.seqlen_q;  // last position this query sees
        visible = 0;
        for (int64_t c = 0; c < keys; ++c) {
          if (w.positions[c] > limit) {
            srow[c] = kNegInf;
          } else {
            ++visible;
          }
        }
      }
      // visible > 0 keeps at least one finite score; entries from `keys` on are padding.
      any |= softmax_update_row(srow, kChunkKeys, visible > 0 ? keys : 0, st.m + r, st.l + r, st.o + r * L.Dv,
                                L.Dv);
    }
    if (any) pv_block(w.s.get(), kChunkKeys, 1, w.v.get(), L.Dv, keys, st.o, L.Dv, L.rows, L.Dv / kW);
  }
}

template <typename T>
void decode(const DecodeAttentionParams& p, int num_threads) {
  const DecodeLayout L(p, num_threads);
  const int64_t heads = p.batch * p.heads_kv;
  const int64_t state_floats = L.rows * (L.Dv + 2);
  FloatBuffer states(heads * L.splits * state_floats);
  if (!states.ok()) throw std::bad_alloc();
  auto state = [&](int64_t bh, int64_t split) {
    float* base = states.get() + (bh * L.splits + split) * state_floats;
    return SplitState{base, base + L.rows * L.Dv, base + L.rows * L.Dv + L.rows};
  };
  bool scratch_failed = false;

#pragma omp parallel num_threads(num_threads)
  {
    DecodeScratch w(L);
    if (!w.ok()) {
#pragma omp atomic write
      scratch_failed = true;
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < heads * L.splits; ++t) {
      if (!w.ok()) continue;
      const int64_t bh = t / L.splits, split = t % L.splits;
      decode_split<T>(p, L, bh / p.heads_kv, bh % p.heads_kv, split, state(bh, split), w);
    }

    // Merge the splits of every (batch, query head, query) row.
#pragma omp for schedule(static)
    for (int64_t t = 0; t < heads * L.rows; ++t) {
      if (!w.ok()) continue;
      const int64_t bh = t / L.rows, r = t % L.rows;
      float m = kNegInf;
      for (int64_t s = 0; s < L.splits; ++s) m = state(bh, s).m[r] > m ? state(bh, s).m[r] : m;
      float l = 0.0f;
      float* o = w.row.get();
      std::memset(o, 0, sizeof(float) * L.Dv);
      if (m != kNegInf) {
        for (int64_t s = 0; s < L.splits; ++s) {
          const SplitState st = state(bh, s);
          if (st.l[r] == 0.0f) continue;
          const float alpha = std::exp2(st.m[r] - m);
          l += st.l[r] * alpha;
          for (int64_t d = 0; d < L.D; ++d) o[d] += st.o[r * L.Dv + d] * alpha;
        }
      }
      const int64_t b = bh / p.heads_kv, h = (bh % p.heads_kv) * p.group_size() + r / p.seqlen_q;
      const int64_t i = r % p.seqlen_q;
      auto* out = reinterpret_cast<typename T::storage*>(p.out) + b * p.out_stride[0] + h * p.out_stride[1] +
                  i * p.out_stride[2];
      float* lse = reinterpret_cast<float*>(p.lse) + (b * p.heads_q + h) * p.seqlen_q + i;
      finish_row<T>(o, m, l, L.D, out, lse);
    }
  }
  if (scratch_failed) throw std::bad_alloc();
}

}  // namespace decode_detail

inline void decode_attention(const DecodeAttentionParams& p, int num_threads) {
  using namespace decode_detail;
  switch (p.dtype) {
    case DType::kFloat32:
      decode<F32>(p, num_threads);
      return;
    case DType::kFloat16:
      decode<F16>(p, num_threads);
      return;
    case DType::kBFloat16:
      decode<BF16>(p, num_threads);
      return;
  }
  throw std::invalid_argument("decode_attention: unsupported dtype");
}

}  // namespace kc::cpu::KC_ISA
