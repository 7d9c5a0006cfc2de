// Helpers shared by the CUDA attention kernels: dtype conversion, warp reductions, error checks.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace kc::cuda_detail {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Pointer to token `token` of (batch b, head h) in a tensor given by its address and
// (batch, head, token) element strides.
template <typename T>
__device__ __forceinline__ T* token_ptr(std::uintptr_t address, const std::array<int64_t, 3>& stride, int64_t b,
                                        int64_t h, int64_t token) {
  return reinterpret_cast<T*>(address) + b * stride[0] + h * stride[1] + token * stride[2];
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, offset));
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(kFullMask, x, offset);
  return x;
}

// One row's online-softmax step over a tile of keys held one per lane: lane j has the score s of
// key j (log2 domain, -inf when hidden). Updates the running max m and sum l and accumulates
// o[c] (output column lane + 32 c) += sum_j p_j v[j, :], with v rows `ldv` floats apart.
template <int kChunks>
__device__ __forceinline__ void warp_softmax_step(float s, int keys, const float* v, int ldv, int D, float& m,
                                                  float& l, float (&o)[kChunks]) {
  const float tile_max = warp_max(s);
  if (tile_max == -INFINITY) return;  // the row sees no key of this tile
  const float m_new = fmaxf(m, tile_max);
  const float alpha = exp2f(m - m_new);
  const float prob = exp2f(s - m_new);  // 0 for hidden keys
  l = l * alpha + warp_sum(prob);
  m = m_new;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) o[c] *= alpha;
  for (int j = 0; j < keys; ++j) {
    const float pj = __shfl_sync(kFullMask, prob, j);
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int d = threadIdx.x % 32 + 32 * c;
      if (d < D) o[c] += pj * v[j * ldv + d];
    }
  }
}

inline void check(cudaError_t err, const char* op, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(op) + " (CUDA): " + what + ": " + cudaGetErrorString(err));
  }
}

// Raises the dynamic shared-memory limit of `kernel` when it needs more than the default 48 KiB.
template <typename Kernel>
void allow_shared_memory(Kernel kernel, size_t bytes, const char* op) {
  if (bytes > 48 * 1024) {
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)), op,
          "raising the shared-memory limit");
  }
}

inline int compute_capability_major(int device) {
  int major = 0;
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "attention", "querying the device");
  return major;
}

}  // namespace kc::cuda_detail
