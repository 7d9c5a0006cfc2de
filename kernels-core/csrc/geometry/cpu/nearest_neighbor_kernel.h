// Nearest-neighbour search on the CPU, compiled once per instruction set.
//
// y is repacked per batch item into structure-of-arrays fp32 rows (xs, ys, zs, padded with far
// points), so the inner loop computes kVecWidth squared distances per instruction. Query points
// are processed kQueries at a time, so every loaded vector of y serves several queries; each
// query keeps a per-lane running minimum and its index, reduced across lanes at the end.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

#include "common/cpu_vec.h"
#include "geometry/nearest_neighbor.h"

namespace kc::cpu::KC_ISA {
namespace nearest_neighbor_detail {

constexpr int kW = kVecWidth;
constexpr int kQueries = 4;
constexpr float kFar = 1e30f;  // padding coordinate: never the nearest point

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

inline float* alloc_floats(int64_t n) {
  const size_t bytes = static_cast<size_t>(round_up(n * static_cast<int64_t>(sizeof(float)), 64));
  return static_cast<float*>(std::aligned_alloc(64, bytes == 0 ? 64 : bytes));
}

// Nearest y for queries q[0 .. count) (count <= kQueries) against SoA rows of m_pad points.
inline void search(const float (*q)[3], int count, const float* xs, const float* ys, const float* zs, int64_t m_pad,
                   float* best_dist, int64_t* best_index) {
  vfloat best[kQueries];
  vint best_at[kQueries];
  vfloat qx[kQueries], qy[kQueries], qz[kQueries];
  for (int k = 0; k < kQueries; ++k) {
    const int src = k < count ? k : 0;
    qx[k] = vbroadcast(q[src][0]);
    qy[k] = vbroadcast(q[src][1]);
    qz[k] = vbroadcast(q[src][2]);
    best[k] = vbroadcast(std::numeric_limits<float>::infinity());
    best_at[k] = vint{};
  }
  vint lane = {};
  for (int i = 0; i < kW; ++i) lane[i] = i;
  for (int64_t j = 0; j < m_pad; j += kW) {
    const vfloat px = vload(xs + j), py = vload(ys + j), pz = vload(zs + j);
    const vint at = lane + static_cast<int32_t>(j);
#pragma GCC unroll 4
    for (int k = 0; k < kQueries; ++k) {
      const vfloat dx = px - qx[k], dy = py - qy[k], dz = pz - qz[k];
      const vfloat d = dx * dx + dy * dy + dz * dz;
      const vint closer = d < best[k];
      best[k] = closer ? d : best[k];
      best_at[k] = closer ? at : best_at[k];
    }
  }
  for (int k = 0; k < count; ++k) {
    float d = best[k][0];
    int32_t at = best_at[k][0];
    for (int i = 1; i < kW; ++i) {
      // Ties go to the lower index, as in the reference (torch.min returns the first minimum).
      if (best[k][i] < d || (best[k][i] == d && best_at[k][i] < at)) {
        d = best[k][i];
        at = best_at[k][i];
      }
    }
    best_dist[k] = d;
    best_index[k] = at;
  }
}

inline void nearest_neighbor(const NearestNeighborParams& p, int num_threads) {
  const int64_t m_pad = round_up(p.m, kW);
  const auto* x = reinterpret_cast<const float*>(p.x);
  const auto* y = reinterpret_cast<const float*>(p.y);
  auto* dist = reinterpret_cast<float*>(p.dist);
  auto* index = reinterpret_cast<int64_t*>(p.index);
  float* soa = alloc_floats(p.batch * 3 * m_pad);
  if (soa == nullptr) throw std::bad_alloc();

#pragma omp parallel num_threads(num_threads)
  {
#pragma omp for schedule(static)
    for (int64_t b = 0; b < p.batch; ++b) {
      float* xs = soa + b * 3 * m_pad;
      float* ys = xs + m_pad;
      float* zs = ys + m_pad;
      for (int64_t j = 0; j < m_pad; ++j) {
        const bool real = j < p.m;
        const float* pt = y + b * p.y_stride[0] + (real ? j : 0) * p.y_stride[1];
        xs[j] = real ? pt[0] : kFar;
        ys[j] = real ? pt[p.y_stride[2]] : kFar;
        zs[j] = real ? pt[2 * p.y_stride[2]] : kFar;
      }
    }
    const int64_t groups = (p.n + kQueries - 1) / kQueries;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < p.batch * groups; ++t) {
      const int64_t b = t / groups, i0 = (t % groups) * kQueries;
      const int count = static_cast<int>(p.n - i0 < kQueries ? p.n - i0 : kQueries);
      float q[kQueries][3];
      for (int k = 0; k < count; ++k) {
        const float* pt = x + b * p.x_stride[0] + (i0 + k) * p.x_stride[1];
        for (int c = 0; c < 3; ++c) q[k][c] = pt[c * p.x_stride[2]];
      }
      const float* xs = soa + b * 3 * m_pad;
      search(q, count, xs, xs + m_pad, xs + 2 * m_pad, m_pad, dist + b * p.n + i0, index + b * p.n + i0);
    }
  }
  std::free(soa);
}

}  // namespace nearest_neighbor_detail

inline void nearest_neighbor(const NearestNeighborParams& p, int num_threads) {
  nearest_neighbor_detail::nearest_neighbor(p, num_threads);
}

}  // namespace kc::cpu::KC_ISA
