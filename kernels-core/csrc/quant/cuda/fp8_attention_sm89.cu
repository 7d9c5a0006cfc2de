// FP8 block-sparse attention on FP8 tensor cores (mma.sync m16n8k32 e4m3, sm_89 and newer).
// Numerics: quant/fp8_attention.h; the CPU kernel follows the same steps.
//
// A CTA owns up to 64 query rows of one query block (4 warps x 16 rows) of one (batch, head) and
// walks the block's key list in chunks of 64 keys:
//   S = Q8 K8^T            8 n-tiles of m16n8k32, Q fragments held in registers for the whole row
//   online softmax         base 2, per row across the 4 lanes of a quad
//   P8 = e4m3(P * 448)     packed straight from the S accumulators into A fragments
//   O += P8 V8             V is stored channel-major with each 16-key group permuted so that the
//                          accumulator layout of S is the A layout of P (no shuffles): logical key
//                          4t + i of a group is physical key 2t + (i & 1) + 8 (i >> 1).
// Shared memory holds one K chunk [64, D] and one V^T chunk [D, 64], rows padded by 16 bytes so
// the fragment loads hit 32 distinct banks.
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "attention/cuda/cuda_common.cuh"
#include "quant/fp8_attention.h"

namespace kc {
namespace {

using cuda_detail::check;
using cuda_detail::from_float;
using cuda_detail::kLn2;
using cuda_detail::kLog2e;

constexpr int kWarps = 4;
constexpr int kRows = 16 * kWarps;  // query rows per CTA
constexpr int kChunk = 64;          // keys per step
constexpr int kPad = 16;            // bytes of padding per shared-memory row

__device__ __forceinline__ void mma_e4m3(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// Two probabilities -> two e4m3 codes (x in the low byte), P scaled by 448, round to nearest even.
__device__ __forceinline__ uint32_t pack_p(float x, float y) {
  return static_cast<uint32_t>(__nv_cvt_float2_to_fp8x2(make_float2(x * 448.0f, y * 448.0f), __NV_SATFINITE, __NV_E4M3));
}

// Copies `rows` rows of `bytes_per_row` bytes (multiple of 16) from global (row stride in bytes) to
// shared (row stride bytes_per_row + kPad); rows at or past `valid_rows` are zero-filled.
__device__ __forceinline__ void copy_rows(uint8_t* dst, const uint8_t* src, int64_t src_stride, int rows,
                                          int bytes_per_row, int valid_rows, int valid_bytes) {
  const int vectors_per_row = bytes_per_row / 16;
  for (int idx = threadIdx.x; idx < rows * vectors_per_row; idx += blockDim.x) {
    const int r = idx / vectors_per_row, c = (idx % vectors_per_row) * 16;
    uint4 value = make_uint4(0, 0, 0, 0);
    if (r < valid_rows && c < valid_bytes) value = *reinterpret_cast<const uint4*>(src + r * src_stride + c);
    *reinterpret_cast<uint4*>(dst + r * (bytes_per_row + kPad) + c) = value;
  }
}

template <typename OutT, int D>
__global__ void __launch_bounds__(kWarps * 32) fp8_attention_kernel(const Fp8AttentionParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  constexpr int kSteps = D / 32;       // k-steps of Q K^T
  constexpr int kDTiles = D / 8;       // n-tiles of P V
  constexpr int kKeyTiles = kChunk / 8;
  constexpr int kKStride = D + kPad, kVStride = kChunk + kPad;
  __shared__ __align__(16) uint8_t ks[kChunk * kKStride];
  __shared__ __align__(16) uint8_t vs[D * kVStride];
  __shared__ float key_scale[kChunk];  // k_scale of each key of the chunk, -inf marks a masked key

  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int64_t hk = h / (p.heads_q / p.heads_kv);
  const int64_t tiles_per_block = (p.block_q + kRows - 1) / kRows;
  const int64_t qb = blockIdx.x / tiles_per_block;
  const int64_t i0 = qb * p.block_q + (blockIdx.x % tiles_per_block) * kRows;
  const int64_t row_end = min(qb * p.block_q + p.block_q, p.seqlen_q);
  if (i0 >= row_end) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t rows[2] = {i0 + warp * 16 + g, i0 + warp * 16 + g + 8};

  // Q fragments and per-row score scales (rows past the block read as zero).
  const auto* q8 = reinterpret_cast<const uint8_t*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
  uint32_t qa[kSteps][4];
  float row_scale[2];
  const int64_t q_groups = (p.seqlen_q + p.q_group - 1) / p.q_group;
  const auto* q_scale = reinterpret_cast<const float*>(p.q_scale) + (b * p.heads_q + h) * q_groups;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const bool ok = rows[r] < row_end;
    row_scale[r] = ok ? q_scale[rows[r] / p.q_group] * p.scale * kLog2e : 0.0f;
    const uint8_t* src = q8 + (ok ? rows[r] : 0) * p.q_stride[2];
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      qa[s][r] = ok ? *reinterpret_cast<const uint32_t*>(src + s * 32 + t * 4) : 0u;
      qa[s][r + 2] = ok ? *reinterpret_cast<const uint32_t*>(src + s * 32 + 16 + t * 4) : 0u;
    }
  }

  float acc[kDTiles][4];
#pragma unroll
  for (int dt = 0; dt < kDTiles; ++dt) acc[dt][0] = acc[dt][1] = acc[dt][2] = acc[dt][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  const auto* k8 = reinterpret_cast<const uint8_t*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1];
  const auto* v8 = reinterpret_cast<const uint8_t*>(p.v) + b * p.v_stride[0] + hk * p.v_stride[1];
  const int64_t k_groups = (p.seqlen_k + p.k_group - 1) / p.k_group;
  const auto* k_scale = reinterpret_cast<const float*>(p.k_scale) + (b * p.heads_kv + hk) * k_groups;
  const auto* key_valid = reinterpret_cast<const uint8_t*>(p.key_valid);
  const int64_t num_key_blocks = p.num_key_blocks();

  int64_t list_length = num_key_blocks;
  const int32_t* list = nullptr;
  if (p.block_counts != 0) {
    const auto* counts = reinterpret_cast<const int32_t*>(p.block_counts);
    list_length = min(static_cast<int64_t>(counts[b * p.counts_stride[0] + h * p.counts_stride[1] +
                                                  qb * p.counts_stride[2]]),
                      p.indices_width);
    list = reinterpret_cast<const int32_t*>(p.block_indices) + b * p.indices_stride[0] + h * p.indices_stride[1] +
           qb * p.indices_stride[2];
  }

  for (int64_t j = 0; j < list_length; ++j) {
    const int64_t kb = list ? list[j * p.indices_stride[3]] : j;
    if (kb < 0 || kb >= num_key_blocks) continue;
    const int64_t block_end = min(kb * p.block_k + p.block_k, p.seqlen_k);
    for (int64_t c0 = kb * p.block_k; c0 < block_end; c0 += kChunk) {
      const int n = static_cast<int>(min(static_cast<int64_t>(kChunk), block_end - c0));
      __syncthreads();  // the previous chunk is consumed
      copy_rows(ks, k8 + c0 * p.k_stride[2], p.k_stride[2], kChunk, D, n, D);
      copy_rows(vs, v8 + c0, p.v_stride[2], D, kChunk, D, ((n + 15) / 16) * 16);
      if (threadIdx.x < kChunk) {
        const int64_t key = c0 + threadIdx.x;
        const bool valid = static_cast<int>(threadIdx.x) < n && (key_valid == nullptr || key_valid[key] != 0);
        key_scale[threadIdx.x] = valid ? k_scale[key / p.k_group] : -INFINITY;
      }
      __syncthreads();

      // S = Q K^T for this warp's 16 rows x 64 keys.
      float s[kKeyTiles][4];
#pragma unroll
      for (int nt = 0; nt < kKeyTiles; ++nt) {
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
        const uint8_t* krow = ks + (nt * 8 + g) * kKStride + t * 4;
#pragma unroll
        for (int st = 0; st < kSteps; ++st) {
          mma_e4m3(s[nt], qa[st], *reinterpret_cast<const uint32_t*>(krow + st * 32),
                   *reinterpret_cast<const uint32_t*>(krow + st * 32 + 16));
        }
      }

      // Scale, mask, and the online-softmax update (entries 0, 1: row g; 2, 3: row g + 8).
      float chunk_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nt = 0; nt < kKeyTiles; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float kscale = key_scale[nt * 8 + t * 2 + (e & 1)];
          const float value = kscale == -INFINITY ? -INFINITY : s[nt][e] * row_scale[e >> 1] * kscale;
          s[nt][e] = value;
          chunk_max[e >> 1] = fmaxf(chunk_max[e >> 1], value);
        }
      }
      float alpha[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        chunk_max[r] = fmaxf(chunk_max[r], __shfl_xor_sync(cuda_detail::kFullMask, chunk_max[r], 1));
        chunk_max[r] = fmaxf(chunk_max[r], __shfl_xor_sync(cuda_detail::kFullMask, chunk_max[r], 2));
        const float m_new = fmaxf(m[r], chunk_max[r]);
        // A row that has seen nothing yet keeps m = -inf; its p are 0 below (exp2(-inf - 0)).
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;
        alpha[r] = exp2f(m[r] - m_use);
        m[r] = m_new;
        chunk_max[r] = m_use;
      }
      float partial[2] = {0.0f, 0.0f};
#pragma unroll
      for (int nt = 0; nt < kKeyTiles; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[nt][e] = exp2f(s[nt][e] - chunk_max[e >> 1]);
          partial[e >> 1] += s[nt][e];
        }
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) l[r] = l[r] * alpha[r] + partial[r];  // per-lane partial sums
#pragma unroll
      for (int dt = 0; dt < kDTiles; ++dt) {
        acc[dt][0] *= alpha[0];
        acc[dt][1] *= alpha[0];
        acc[dt][2] *= alpha[1];
        acc[dt][3] *= alpha[1];
      }

      // O += P8 V8: two k-steps of 32 keys; the S accumulators are the A fragments.
#pragma unroll
      for (int kk = 0; kk < kChunk / 32; ++kk) {
        const int t0 = kk * 4;
        const uint32_t pa[4] = {
            pack_p(s[t0][0], s[t0][1]) | (pack_p(s[t0 + 1][0], s[t0 + 1][1]) << 16),
            pack_p(s[t0][2], s[t0][3]) | (pack_p(s[t0 + 1][2], s[t0 + 1][3]) << 16),
            pack_p(s[t0 + 2][0], s[t0 + 2][1]) | (pack_p(s[t0 + 3][0], s[t0 + 3][1]) << 16),
            pack_p(s[t0 + 2][2], s[t0 + 2][3]) | (pack_p(s[t0 + 3][2], s[t0 + 3][3]) << 16),
        };
#pragma unroll
        for (int dt = 0; dt < kDTiles; ++dt) {
          const uint8_t* vrow = vs + (dt * 8 + g) * kVStride + kk * 32 + t * 4;
          mma_e4m3(acc[dt], pa, *reinterpret_cast<const uint32_t*>(vrow),
                   *reinterpret_cast<const uint32_t*>(vrow + 16));
        }
      }
    }
  }

  // Normalise and store: this lane holds columns dt*8 + 2t, 2t + 1 of rows g and g + 8.
  const int64_t out_base = b * p.out_stride[0] + h * p.out_stride[1];
  const auto* v_scale = reinterpret_cast<const float*>(p.v_scale) + (b * p.heads_kv + hk) * D;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(cuda_detail::kFullMask, l[r], 1);
    l[r] += __shfl_xor_sync(cuda_detail::kFullMask, l[r], 2);
    if (rows[r] >= row_end) continue;
    OutT* o = reinterpret_cast<OutT*>(p.out) + out_base + rows[r] * p.out_stride[2];
    const float norm = l[r] > 0.0f ? 1.0f / (448.0f * l[r]) : 0.0f;
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
      const int d = dt * 8 + t * 2;
      o[d] = from_float<OutT>(acc[dt][2 * r] * v_scale[d] * norm);
      o[d + 1] = from_float<OutT>(acc[dt][2 * r + 1] * v_scale[d + 1] * norm);
    }
    if (t == 0) {
      float* lse = reinterpret_cast<float*>(p.lse);
      lse[b * p.lse_stride[0] + h * p.lse_stride[1] + rows[r] * p.lse_stride[2]] =
          l[r] > 0.0f ? (m[r] + log2f(l[r])) * kLn2 : -INFINITY;
    }
  }
#endif
}

template <typename OutT>
void launch(const Fp8AttentionParams& p, cudaStream_t stream) {
  const int64_t tiles_per_block = (p.block_q + kRows - 1) / kRows;
  const dim3 grid(static_cast<unsigned>(p.num_query_blocks() * tiles_per_block), static_cast<unsigned>(p.heads_q),
                  static_cast<unsigned>(p.batch));
  if (p.head_dim == 64) {
    fp8_attention_kernel<OutT, 64><<<grid, kWarps * 32, 0, stream>>>(p);
  } else {
    fp8_attention_kernel<OutT, 128><<<grid, kWarps * 32, 0, stream>>>(p);
  }
  check(cudaGetLastError(), "fp8_attention", "launch");
}

}  // namespace

void fp8_attention_cuda(const Fp8AttentionParams& p, std::uintptr_t stream, int device) {
  p.validate();
  const char* op = "fp8_attention";
  if (p.head_dim != 64 && p.head_dim != 128) {
    throw std::invalid_argument("fp8_attention (CUDA): head_dim must be 64 or 128, got " + std::to_string(p.head_dim));
  }
  if (!p.v_transposed) throw std::invalid_argument("fp8_attention (CUDA): v must be in the channel-major layout");
  if (p.block_k % 16 != 0) {
    throw std::invalid_argument("fp8_attention (CUDA): block_k must be a multiple of 16, got " +
                                std::to_string(p.block_k));
  }
  check(cudaSetDevice(device), op, "selecting the device");
  int major = 0, minor = 0;
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), op, "querying the device");
  check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), op, "querying the device");
  if (major * 10 + minor < 89) {
    throw std::invalid_argument("fp8_attention (CUDA): needs FP8 tensor cores (compute capability 8.9 or newer), "
                                "this device is " + std::to_string(major) + "." + std::to_string(minor));
  }
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  switch (p.out_dtype) {
    case DType::kFloat32:
      return launch<float>(p, s);
    case DType::kFloat16:
      return launch<__half>(p, s);
    case DType::kBFloat16:
      return launch<__nv_bfloat16>(p, s);
  }
}

}  // namespace kc
