// float32 -> e4m3 on CUDA with the same bit-level conversion as the CPU (quant/fp8.h), so both
// devices give identical codes. Runs on every architecture.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "quant/fp8.h"
#include "quant/fp8_attention.h"

namespace kc {
namespace {

__global__ void encode_kernel(const float* __restrict__ x, uint8_t* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] = fp8::encode_e4m3(x[i]);
  }
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("fp8_encode (CUDA): ") + what + ": " + cudaGetErrorString(err));
}

}  // namespace

void fp8_encode_cuda(std::uintptr_t src, std::uintptr_t dst, int64_t n, std::uintptr_t stream, int device) {
  if (n <= 0) return;
  check(cudaSetDevice(device), "selecting the device");
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, 65535);
  encode_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<const float*>(src), reinterpret_cast<uint8_t*>(dst), n);
  check(cudaGetLastError(), "launch");
}

}  // namespace kc
