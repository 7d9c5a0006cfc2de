// Block-score estimation on the CPU: the cheap attention estimate mask predictors start from.
//
// Phase 1 mean-pools every key block of every key/value head into a transposed fp32 table
// [D, nkb]; phase 2 pools a tile of query blocks, multiplies it against that table with the
// attention micro-kernel and turns each row into a softmax over the key blocks it may see.
// The cost is O(S D + nqb nkb D) per head: about (block_q block_k) times less than attention.
#pragma once

#include <cstdint>
#include <cstring>
#include <new>

#include "attention/block_selection_params.h"
#include "attention/cpu/attention_tiles.h"

namespace kc::cpu::KC_ISA {
namespace block_scores_detail {
using namespace attention_detail;

constexpr int64_t kTileBlocks = 16;  // query blocks per work item

// Mean of rows [first, first + count) of a [S, D] strided matrix into out[0 .. D).
template <typename T>
void pool_rows(const typename T::storage* base, int64_t row_stride, int64_t first, int64_t count, int64_t D,
               float* row, float* out) {
  std::memset(out, 0, sizeof(float) * D);
  for (int64_t i = 0; i < count; ++i) {
    T::load(base + (first + i) * row_stride, row, D);
    for (int64_t d = 0; d < D; ++d) out[d] += row[d];
  }
  const float inv = 1.0f / static_cast<float>(count);
  for (int64_t d = 0; d < D; ++d) out[d] *= inv;
}

template <typename T>
void block_scores(const BlockScoresParams& p, int num_threads) {
  using S = typename T::storage;
  const int64_t D = p.head_dim, nqb = p.num_query_blocks(), nkb = p.num_key_blocks();
  const int64_t nkb_pad = round_up(nkb, kW);
  const int64_t group = p.heads_q / p.heads_kv;
  const int64_t table_floats = D * nkb_pad;
  const int64_t causal_offset = p.seqlen_k - p.seqlen_q;

  FloatBuffer tables(p.batch * p.heads_kv * table_floats);
  if (!tables.ok()) throw std::bad_alloc();
  bool scratch_failed = false;

#pragma omp parallel num_threads(num_threads)
  {
    FloatBuffer row(D), pooled(kTileBlocks * D), s(kTileBlocks * nkb_pad);
    const bool ok = row.ok() && pooled.ok() && s.ok();
    if (!ok) {
#pragma omp atomic write
      scratch_failed = true;
    }
#pragma omp for schedule(static)
    for (int64_t t = 0; t < p.batch * p.heads_kv * nkb; ++t) {
      if (!ok) continue;
      const int64_t bh = t / nkb, kb = t % nkb;
      const int64_t b = bh / p.heads_kv, hk = bh % p.heads_kv;
      float* table = tables.get() + bh * table_floats;
      if (kb == 0) {
        for (int64_t d = 0; d < D; ++d) std::memset(table + d * nkb_pad + nkb, 0, sizeof(float) * (nkb_pad - nkb));
      }
      const S* kbase = reinterpret_cast<const S*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1];
      const int64_t first = kb * p.block_k, count = imin(p.block_k, p.seqlen_k - first);
      pool_rows<T>(kbase, p.k_stride[2], first, count, D, row.get(), pooled.get());
      for (int64_t d = 0; d < D; ++d) table[d * nkb_pad + kb] = pooled.get()[d];
    }

    const int64_t tiles = (nqb + kTileBlocks - 1) / kTileBlocks;
    const float log2_scale = p.scale * kLog2e;
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < p.batch * p.heads_q * tiles; ++t) {
      if (!ok) continue;
      const int64_t bh = t / tiles, first_block = (t % tiles) * kTileBlocks;
      const int64_t b = bh / p.heads_q, h = bh % p.heads_q;
      const int64_t blocks = imin(kTileBlocks, nqb - first_block);
      const S* qbase = reinterpret_cast<const S*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
      for (int64_t i = 0; i < blocks; ++i) {
        const int64_t first = (first_block + i) * p.block_q, count = imin(p.block_q, p.seqlen_q - first);
        float* out = pooled.get() + i * D;
        pool_rows<T>(qbase, p.q_stride[2], first, count, D, row.get(), out);
        for (int64_t d = 0; d < D; ++d) out[d] *= log2_scale;
      }
      const float* table = tables.get() + (b * p.heads_kv + h / group) * table_floats;
      qk_block(pooled.get(), D, table, nkb_pad, D, s.get(), nkb_pad, blocks, nkb_pad / kW);

      for (int64_t i = 0; i < blocks; ++i) {
        const int64_t qb = first_block + i;
        float* srow = s.get() + i * nkb_pad;
        float* out = reinterpret_cast<float*>(p.scores) + (bh * nqb + qb) * nkb;
        int64_t allowed = nkb;
        if (p.causal) {
          const int64_t last_query = imin((qb + 1) * p.block_q, p.seqlen_q) - 1;
          const int64_t last_key = last_query + causal_offset;
          allowed = last_key < 0 ? 0 : imin(nkb, last_key / p.block_k + 1);
        }
        std::memset(out, 0, sizeof(float) * nkb);
        if (allowed == 0) continue;
        float m = srow[0];
        for (int64_t c = 1; c < allowed; ++c) m = srow[c] > m ? srow[c] : m;
        float sum = 0.0f;
        for (int64_t c = 0; c < allowed; ++c) {
          out[c] = std::exp2(srow[c] - m);
          sum += out[c];
        }
        const float inv = 1.0f / sum;
        for (int64_t c = 0; c < allowed; ++c) out[c] *= inv;
      }
    }
  }
  if (scratch_failed) throw std::bad_alloc();
}

}  // namespace block_scores_detail

inline void block_scores(const BlockScoresParams& p, int num_threads) {
  using namespace block_scores_detail;
  switch (p.dtype) {
    case DType::kFloat32:
      block_scores<F32>(p, num_threads);
      return;
    case DType::kFloat16:
      block_scores<F16>(p, num_threads);
      return;
    case DType::kBFloat16:
      block_scores<BF16>(p, num_threads);
      return;
  }
  throw std::invalid_argument("block_scores: unsupported dtype");
}

}  // namespace kc::cpu::KC_ISA
