// Turning block scores into key-block budgets and index lists (plain C++, compiled once: sorting
// dominates, not arithmetic).
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "attention/block_selection_params.h"

namespace kc {
namespace {

// Block ids of one row ordered by score, highest first; ties keep the lower block id first.
void order_by_score(const float* scores, int64_t n, std::vector<int32_t>& order) {
  order.resize(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [scores](int32_t a, int32_t b) { return scores[a] > scores[b]; });
}

}  // namespace

void block_recall_counts_cpu(const BlockSelectionParams& p, int num_threads) {
  p.validate(false);
  const auto* scores = reinterpret_cast<const float*>(p.scores);
  auto* counts = reinterpret_cast<int32_t*>(p.counts);
  const int64_t n = p.num_blocks;
  const int64_t hi = p.max_blocks > 0 ? std::min(p.max_blocks, n) : n;
  const int64_t lo = std::min(std::max<int64_t>(p.min_blocks, 0), hi);
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<int32_t> order;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < p.rows; ++r) {
      const float* row = scores + r * n;
      order_by_score(row, n, order);
      double total = 0.0;
      for (int64_t c = 0; c < n; ++c) total += row[c] > 0.0f ? row[c] : 0.0f;
      const double target = static_cast<double>(p.gamma) * total;
      int64_t k = 0;
      double covered = 0.0;
      while (k < n && covered < target && row[order[k]] > 0.0f) covered += row[order[k++]];
      counts[r] = static_cast<int32_t>(std::clamp(k, lo, hi));
    }
  }
}

void block_top_indices_cpu(const BlockSelectionParams& p, int num_threads) {
  p.validate(true);
  const auto* scores = reinterpret_cast<const float*>(p.scores);
  const auto* counts = reinterpret_cast<const int32_t*>(p.counts);
  auto* indices = reinterpret_cast<int32_t*>(p.indices);
  const int64_t n = p.num_blocks;
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<int32_t> order;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < p.rows; ++r) {
      const int64_t k = std::clamp<int64_t>(counts[r], 0, std::min(n, p.width));
      order_by_score(scores + r * n, n, order);
      int32_t* out = indices + r * p.width;
      std::copy(order.begin(), order.begin() + k, out);
      std::sort(out, out + k);
      std::fill(out + k, out + p.width, -1);
    }
  }
}

}  // namespace kc
