// Nearest-neighbour search between two batched 3-D point sets (the O(N M) part of Chamfer
// distance). For every point x[b, i] it finds argmin_j |x[b, i] - y[b, j]|^2.
#pragma once

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace kc {

struct NearestNeighborParams {
  // x [B, N, 3] and y [B, M, 3] float32 (any strides); dist [B, N] float32 and index [B, N]
  // int64, contiguous.
  std::uintptr_t x = 0, y = 0, dist = 0, index = 0;
  int64_t batch = 0, n = 0, m = 0;
  std::array<int64_t, 3> x_stride{}, y_stride{};

  void validate() const {
    auto fail = [](const std::string& what) { throw std::invalid_argument("nearest_neighbor: " + what); };
    if (!x || !y || !dist || !index) fail("a tensor address is null");
    if (batch <= 0 || n <= 0 || m <= 0) fail("sizes must be positive");
  }
};

void nearest_neighbor_cpu(const NearestNeighborParams& params, int num_threads);
void nearest_neighbor_cuda(const NearestNeighborParams& params, std::uintptr_t stream, int device);

}  // namespace kc
