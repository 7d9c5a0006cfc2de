// Nearest-neighbour search on CUDA: one thread per query point, candidate points streamed
// through shared memory in tiles (structure of arrays), first minimum kept on ties.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "geometry/nearest_neighbor.h"

namespace kc {
namespace {

constexpr int kThreads = 256;
constexpr int kTile = 1024;

__global__ void __launch_bounds__(kThreads) nearest_neighbor_kernel(const NearestNeighborParams p) {
  __shared__ float tile[3][kTile];
  const int64_t b = blockIdx.y;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const auto* x = reinterpret_cast<const float*>(p.x) + b * p.x_stride[0];
  const auto* y = reinterpret_cast<const float*>(p.y) + b * p.y_stride[0];
  float qx = 0.0f, qy = 0.0f, qz = 0.0f;
  if (i < p.n) {
    qx = x[i * p.x_stride[1]];
    qy = x[i * p.x_stride[1] + p.x_stride[2]];
    qz = x[i * p.x_stride[1] + 2 * p.x_stride[2]];
  }
  float best = INFINITY;
  int64_t best_at = 0;
  for (int64_t j0 = 0; j0 < p.m; j0 += kTile) {
    const int count = static_cast<int>(min(static_cast<int64_t>(kTile), p.m - j0));
    __syncthreads();
    for (int j = threadIdx.x; j < count; j += kThreads) {
      const float* pt = y + (j0 + j) * p.y_stride[1];
      tile[0][j] = pt[0];
      tile[1][j] = pt[p.y_stride[2]];
      tile[2][j] = pt[2 * p.y_stride[2]];
    }
    __syncthreads();
    for (int j = 0; j < count; ++j) {
      const float dx = tile[0][j] - qx, dy = tile[1][j] - qy, dz = tile[2][j] - qz;
      const float d = dx * dx + dy * dy + dz * dz;
      if (d < best) {
        best = d;
        best_at = j0 + j;
      }
    }
  }
  if (i < p.n) {
    reinterpret_cast<float*>(p.dist)[b * p.n + i] = best;
    reinterpret_cast<int64_t*>(p.index)[b * p.n + i] = best_at;
  }
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("nearest_neighbor (CUDA): ") + what + ": " + cudaGetErrorString(err));
  }
}

}  // namespace

void nearest_neighbor_cuda(const NearestNeighborParams& params, std::uintptr_t stream, int device) {
  params.validate();
  check(cudaSetDevice(device), "selecting the device");
  const dim3 grid(static_cast<unsigned>((params.n + kThreads - 1) / kThreads), static_cast<unsigned>(params.batch));
  nearest_neighbor_kernel<<<grid, kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(params);
  check(cudaGetLastError(), "kernel launch");
}

}  // namespace kc
