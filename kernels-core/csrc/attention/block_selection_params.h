// Arguments of the block-score estimator and the block selection that turns scores into
// key-block index lists (the mask predictor several packages share).
#pragma once

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/dtype.h"

namespace kc {

// scores[b, h, qb, kb] = softmax over kb of (mean_q(block qb) . mean_k(block kb)) * scale,
// restricted under `causal` to key blocks whose first key the last query of qb can see.
struct BlockScoresParams {
  std::uintptr_t q = 0, k = 0;  // q [B, Hq, Sq, D], k [B, Hkv, Sk, D] of `dtype`
  std::uintptr_t scores = 0;    // float32 [B, Hq, nqb, nkb], contiguous
  DType dtype = DType::kFloat32;
  int64_t batch = 0, heads_q = 0, heads_kv = 0, seqlen_q = 0, seqlen_k = 0, head_dim = 0;
  std::array<int64_t, 3> q_stride{}, k_stride{};
  int64_t block_q = 64, block_k = 64;
  bool causal = false;
  float scale = 1.0f;

  int64_t num_query_blocks() const { return (seqlen_q + block_q - 1) / block_q; }
  int64_t num_key_blocks() const { return (seqlen_k + block_k - 1) / block_k; }

  void validate() const {
    auto fail = [](const std::string& what) { throw std::invalid_argument("block_scores: " + what); };
    if (!q || !k || !scores) fail("a tensor address is null");
    if (batch <= 0 || heads_q <= 0 || heads_kv <= 0 || seqlen_q <= 0 || seqlen_k <= 0 || head_dim <= 0)
      fail("sizes must be positive");
    if (heads_q % heads_kv != 0) fail("heads_q must be a multiple of heads_kv");
    if (block_q <= 0 || block_k <= 0) fail("block sizes must be positive");
  }
};

// Row-wise selection over `rows` score rows of `num_blocks` float32 entries (contiguous).
struct BlockSelectionParams {
  std::uintptr_t scores = 0;
  int64_t rows = 0, num_blocks = 0;
  // recall_counts: counts[r] = clamp(smallest k whose top-k scores sum to >= gamma * row sum,
  // min_blocks, max_blocks); int32 [rows].
  std::uintptr_t counts = 0;
  float gamma = 0.9f;
  int64_t min_blocks = 1, max_blocks = 0;
  // top_blocks: the counts[r] highest-scoring blocks of row r in ascending block order, then -1;
  // int32 [rows, width].
  std::uintptr_t indices = 0;
  int64_t width = 0;

  void validate(bool selecting) const {
    auto fail = [](const std::string& what) { throw std::invalid_argument("block selection: " + what); };
    if (!scores || !counts || (selecting && !indices)) fail("a tensor address is null");
    if (rows < 0 || num_blocks <= 0) fail("sizes must be positive");
    if (selecting && width <= 0) fail("width must be positive");
  }
};

void block_scores_cpu(const BlockScoresParams& params, int num_threads);
void block_recall_counts_cpu(const BlockSelectionParams& params, int num_threads);
void block_top_indices_cpu(const BlockSelectionParams& params, int num_threads);

}  // namespace kc
