// Block-sparse attention forward for Hopper (sm_90a): wgmma + TMA. (default on Hopper; KC_SM90_WGMMA=0 turns it off)
// until it has been validated on a GPU; by default Hopper runs the sm_80 mma.sync kernel.
//
// One warpgroup (4 warps, 128 threads) owns 64 query rows of one (batch, head) inside one query
// block. Thread 0 issues TMA copies of the Q tile and of the 64-key K/V tiles of the enabled key
// blocks into a two-stage ring (128-byte swizzled 64x64 boxes, one mbarrier per stage), so the
// next tile lands while the current one is used:
//
//   S = Q K^T     wgmma m64n64k16, A and B from shared memory (both K-major)
//   online softmax on the accumulators (the m16n8 layout per warp, as in the sm_80 kernel)
//   O += P V      wgmma m64n{D}k16, A (P, bf16/fp16) from registers, B = V transposed (MN-major)
//
// Taken, when enabled, for bf16/fp16, D = 64 or 128, block sizes that are multiples of 64 and
// tensors whose row strides TMA accepts (multiples of 16 bytes).
#include <cuda.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "attention/cuda/attention_kernels.h"
#include "attention/cuda/cuda_common.cuh"
#include "attention/cuda/tensor_core.cuh"

namespace kc::cuda_detail {
namespace {
using namespace tc;

constexpr int kThreads = 128;
constexpr int kBox = 64;                            // TMA box: 64 rows x 64 elements (128 bytes)
constexpr int kBoxBytes = kBox * kBox * 2;          // 8 KiB
constexpr uint32_t kSwizzleAtomBytes = 1024;        // 8 rows of 128 bytes

struct TensorMaps {
  CUtensorMap q, k, v;
};

// ---------------------------------------------------------------------------------------------
// Device helpers: mbarrier, TMA, wgmma
// ---------------------------------------------------------------------------------------------
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void mbarrier_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_address(bar)), "r"(count));
}

__device__ __forceinline__ void mbarrier_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_address(bar)), "r"(bytes));
}

__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, uint32_t phase) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "wait_loop:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_loop;\n"
      "}\n" ::"r"(smem_address(bar)),
      "r"(phase)
      : "memory");
}

// One 64x64 box of a 4-D tensor map at coordinates (c0 innermost .. c3) into shared memory.
__device__ __forceinline__ void tma_load(void* dst, const CUtensorMap* map, uint64_t* bar, int c0, int c1, int c2,
                                         int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, %6}], "
      "[%2];\n" ::"r"(smem_address(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_address(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
}

// Shared-memory matrix descriptor for a 128-byte swizzled operand.
__device__ __forceinline__ uint64_t descriptor(const void* p, uint32_t leading_bytes, uint32_t stride_bytes) {
  const auto encode = [](uint64_t x) { return (x & 0x3FFFF) >> 4; };
  return encode(smem_address(p)) | (encode(leading_bytes) << 16) | (encode(stride_bytes) << 32) | (1ull << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }

// Keeps the compiler from moving accumulator accesses across the asynchronous wgmma.
template <int N>
__device__ __forceinline__ void fence_operands(float (&acc)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(acc[i][e])::"memory");
  }
}

#define KC_ACC8(a, i) "+f"(a[i][0]), "+f"(a[i][1]), "+f"(a[i][2]), "+f"(a[i][3])

// S[64 x 64] += A[64 x 16] B[16 x 64], both operands in shared memory (K-major).
template <typename T>
__device__ __forceinline__ void wgmma_ss_n64(float (&acc)[8][4], uint64_t desc_a, uint64_t desc_b);
#define KC_WGMMA_SS_N64(TYPE, PTX_TYPE)                                                                             \
  template <>                                                                                                       \
  __device__ __forceinline__ void wgmma_ss_n64<TYPE>(float (&acc)[8][4], uint64_t desc_a, uint64_t desc_b) {        \
    asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32." PTX_TYPE "." PTX_TYPE                              \
                 " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "    \
                 "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, 1, 1, 1, 0, 0;\n"         \
                 : KC_ACC8(acc, 0), KC_ACC8(acc, 1), KC_ACC8(acc, 2), KC_ACC8(acc, 3), KC_ACC8(acc, 4),             \
                   KC_ACC8(acc, 5), KC_ACC8(acc, 6), KC_ACC8(acc, 7)                                                \
                 : "l"(desc_a), "l"(desc_b));                                                                       \
  }
KC_WGMMA_SS_N64(__nv_bfloat16, "bf16")
KC_WGMMA_SS_N64(__half, "f16")

// O[64 x D] += A[64 x 16] (registers) B[16 x D] (shared memory, transposed: MN-major).
template <typename T, int D>
__device__ __forceinline__ void wgmma_rs(float (&acc)[D / 8][4], const uint32_t (&a)[4], uint64_t desc_b);
#define KC_WGMMA_RS_N64(TYPE, PTX_TYPE)                                                                              \
  template <>                                                                                                        \
  __device__ __forceinline__ void wgmma_rs<TYPE, 64>(float (&acc)[8][4], const uint32_t (&a)[4], uint64_t desc_b) { \
    asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32." PTX_TYPE "." PTX_TYPE                               \
                 " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "     \
                 "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, 1, 1, "   \
                 "1, 1;\n"                                                                                            \
                 : KC_ACC8(acc, 0), KC_ACC8(acc, 1), KC_ACC8(acc, 2), KC_ACC8(acc, 3), KC_ACC8(acc, 4),              \
                   KC_ACC8(acc, 5), KC_ACC8(acc, 6), KC_ACC8(acc, 7)                                                 \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));                                        \
  }
#define KC_WGMMA_RS_N128(TYPE, PTX_TYPE)                                                                               \
  template <>                                                                                                          \
  __device__ __forceinline__ void wgmma_rs<TYPE, 128>(float (&acc)[16][4], const uint32_t (&a)[4], uint64_t desc_b) { \
    asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32." PTX_TYPE "." PTX_TYPE                                \
                 " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "       \
                 "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, "    \
                 "%39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, "     \
                 "%58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, 1, 1, 1, 1;\n"                            \
                 : KC_ACC8(acc, 0), KC_ACC8(acc, 1), KC_ACC8(acc, 2), KC_ACC8(acc, 3), KC_ACC8(acc, 4),                \
                   KC_ACC8(acc, 5), KC_ACC8(acc, 6), KC_ACC8(acc, 7), KC_ACC8(acc, 8), KC_ACC8(acc, 9),                \
                   KC_ACC8(acc, 10), KC_ACC8(acc, 11), KC_ACC8(acc, 12), KC_ACC8(acc, 13), KC_ACC8(acc, 14),           \
                   KC_ACC8(acc, 15)                                                                                    \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));                                          \
  }
KC_WGMMA_RS_N64(__nv_bfloat16, "bf16")
KC_WGMMA_RS_N64(__half, "f16")
KC_WGMMA_RS_N128(__nv_bfloat16, "bf16")
KC_WGMMA_RS_N128(__half, "f16")
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) forward_sm90_kernel(const BlockSparseAttentionParams p,
                                                                const __grid_constant__ TensorMaps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kBoxes = D / kBox;           // 64-column boxes per tile
  constexpr int kTileBytes = kBoxes * kBoxBytes;
  constexpr int kDTiles = D / 8, kDSlices = D / 16, kKTiles = kTile / 8;
  extern __shared__ unsigned char smem_raw[];
  // 128-byte swizzled operands need 1024-byte aligned tiles.
  const uint32_t misalign = smem_address(smem_raw) % kSwizzleAtomBytes;
  unsigned char* smem = smem_raw + (misalign ? kSwizzleAtomBytes - misalign : 0);
  unsigned char* sq = smem;                        // [kBoxes][64][64]
  unsigned char* sk = sq + kTileBytes;             // 2 stages
  unsigned char* sv = sk + 2 * kTileBytes;         // 2 stages
  auto* bars = reinterpret_cast<uint64_t*>(sv + 2 * kTileBytes);  // Q, KV stage 0, KV stage 1

  const QueryTile tile_rows(p);
  if (tile_rows.empty()) return;
  const int64_t b = tile_rows.b, h = tile_rows.h, hk = tile_rows.hk, row0 = tile_rows.row0;
  const SequenceSpan seq = tile_rows.seq;
  const int lane_in_group = tile_rows.lane_in_group;
  const int64_t causal_offset = tile_rows.causal_offset;
  const float score_scale = p.scale * kLog2e;
  // TMA coordinates: (d, token, head, batch); variable-length views have one batch entry.
  const int batch_coord = p.varlen() ? 0 : static_cast<int>(b);

  if (threadIdx.x == 0) {
    for (int i = 0; i < 3; ++i) mbarrier_init(&bars[i], 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  const auto load_kv = [&](int stage, int64_t tile) {
    mbarrier_expect_tx(&bars[1 + stage], 2 * kTileBytes);
    const int token = static_cast<int>(seq.k_start + tile);
    for (int box = 0; box < kBoxes; ++box) {
      tma_load(sk + stage * kTileBytes + box * kBoxBytes, &maps.k, &bars[1 + stage], box * kBox, token,
               static_cast<int>(hk), batch_coord);
      tma_load(sv + stage * kTileBytes + box * kBoxBytes, &maps.v, &bars[1 + stage], box * kBox, token,
               static_cast<int>(hk), batch_coord);
    }
  };

  TileCursor cursor;
  int64_t tile = tile_rows.next_tile(p, cursor);
  if (threadIdx.x == 0) {
    mbarrier_expect_tx(&bars[0], kTileBytes);
    for (int box = 0; box < kBoxes; ++box) {
      tma_load(sq + box * kBoxBytes, &maps.q, &bars[0], box * kBox, static_cast<int>(seq.q_start + row0),
               static_cast<int>(h), batch_coord);
    }
    if (tile >= 0) load_kv(0, tile);
  }

  float o[kDTiles][4];
#pragma unroll
  for (int t = 0; t < kDTiles; ++t) o[t][0] = o[t][1] = o[t][2] = o[t][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const int64_t (&my_row)[2] = tile_rows.my_row;
  uint32_t phases = 0;  // bit s: the parity the next wait on stage s expects
  int stage = 0;
  __syncwarp();  // warp 0 reconverges after thread 0's TMA issue before the .aligned instructions
  mbarrier_wait(&bars[0], 0);

  while (tile >= 0) {
    const int64_t next = tile_rows.next_tile(p, cursor);
    if (next >= 0 && threadIdx.x == 0) load_kv(stage ^ 1, next);  // that stage was released last iteration
    __syncwarp();
    mbarrier_wait(&bars[1 + stage], (phases >> stage) & 1u);
    phases ^= 1u << stage;
    const unsigned char* kt = sk + stage * kTileBytes;
    const unsigned char* vt = sv + stage * kTileBytes;

    float sacc[kKTiles][4];
#pragma unroll
    for (int t = 0; t < kKTiles; ++t) sacc[t][0] = sacc[t][1] = sacc[t][2] = sacc[t][3] = 0.0f;
    fence_operands(sacc);
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < kDSlices; ++s) {
      // 16 columns = 32 bytes inside the 128-byte swizzle row of box s / 4.
      const uint32_t offset = (s / 4) * kBoxBytes + (s % 4) * 32;
      wgmma_ss_n64<T>(sacc, descriptor(sq + offset, 16, kSwizzleAtomBytes),
                      descriptor(kt + offset, 16, kSwizzleAtomBytes));
    }
    wgmma_commit();
    wgmma_wait_all();
    fence_operands(sacc);

#pragma unroll
    for (int t = 0; t < kKTiles; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t key = tile + t * 8 + lane_in_group * 2 + (e & 1);
        const int r = e / 2;
        const bool visible = key < seq.k_len && (!p.causal || key <= my_row[r] + causal_offset);
        sacc[t][e] = visible ? sacc[t][e] * score_scale : -INFINITY;
      }
    }
    online_softmax_update(sacc, o, m, l);

    // All A fragments are written before the fence that orders them before the wgmmas.
    uint32_t pa[kKTiles / 2][4];
#pragma unroll
    for (int ks = 0; ks < kKTiles / 2; ++ks) accumulators_to_a<T>(pa[ks], sacc[2 * ks], sacc[2 * ks + 1]);
    fence_operands(o);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kKTiles / 2; ++ks) {
      // 16 keys = 16 rows of 128 bytes; the d boxes are kBoxBytes apart (the leading offset).
      wgmma_rs<T, D>(o, pa[ks], descriptor(vt + ks * 16 * 128, kBoxBytes, kSwizzleAtomBytes));
    }
    wgmma_commit();
    wgmma_wait_all();
    fence_operands(o);
    __syncthreads();  // every warp is done with this stage before thread 0 refills it
    tile = next;
    stage ^= 1;
  }

  write_output_rows<T, kDTiles>(p, tile_rows, o, m, l);
#endif
}

// ---------------------------------------------------------------------------------------------
// Host side: tensor maps and launch
// ---------------------------------------------------------------------------------------------
using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                 const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                 CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

EncodeTiled encode_tiled() {
  static EncodeTiled fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status{};
    check(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &status),
          "block_sparse_attention", "looking up cuTensorMapEncodeTiled");
    if (status != cudaDriverEntryPointSuccess || ptr == nullptr) {
      throw std::runtime_error("block_sparse_attention (CUDA): the driver has no cuTensorMapEncodeTiled");
    }
    return reinterpret_cast<EncodeTiled>(ptr);
  }();
  return fn;
}

// A 4-D map (d, token, head, batch) with 64x64 boxes over a [batch, heads, tokens, D] tensor.
CUtensorMap make_map(std::uintptr_t address, DType dtype, int64_t batch, int64_t heads, int64_t tokens, int64_t D,
                     const std::array<int64_t, 3>& stride) {
  const int64_t bytes = 2;
  // A size-1 dimension's stride is never used; give it a valid (16-byte multiple) value.
  // (Broadcast, stride-0 dimensions of larger size never get here: see forward_sm90_supports.)
  const auto stride_bytes = [&](int64_t size, int64_t s, int64_t fallback) {
    return static_cast<cuuint64_t>(size == 1 ? fallback : s * bytes);
  };
  const cuuint64_t token_stride = stride_bytes(tokens, stride[2], D * bytes);
  const cuuint64_t head_stride = stride_bytes(heads, stride[1], token_stride * static_cast<cuuint64_t>(tokens));
  const cuuint64_t batch_stride = stride_bytes(batch, stride[0], head_stride * static_cast<cuuint64_t>(heads));
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(D), static_cast<cuuint64_t>(tokens),
                              static_cast<cuuint64_t>(heads), static_cast<cuuint64_t>(batch)};
  const cuuint64_t strides[3] = {token_stride, head_stride, batch_stride};
  const cuuint32_t box[4] = {kBox, kBox, 1, 1};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  CUtensorMap map;
  std::memset(&map, 0, sizeof(map));
  const CUresult rc = encode_tiled()(
      &map, dtype == DType::kBFloat16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 4,
      reinterpret_cast<void*>(address), dims, strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (rc != CUDA_SUCCESS) {
    throw std::runtime_error("block_sparse_attention (CUDA): cuTensorMapEncodeTiled failed with code " +
                             std::to_string(static_cast<int>(rc)));
  }
  return map;
}

template <typename T, int D>
void launch(const BlockSparseAttentionParams& p, cudaStream_t stream) {
  // Variable-length views are one batch entry over all packed tokens.
  const int64_t batch = p.varlen() ? 1 : p.batch;
  const TensorMaps maps{make_map(p.q, p.dtype, batch, p.heads_q, p.tokens_q, D, p.q_stride),
                        make_map(p.k, p.dtype, batch, p.heads_kv, p.tokens_k, D, p.k_stride),
                        make_map(p.v, p.dtype, batch, p.heads_kv, p.tokens_k, D, p.v_stride)};
  const size_t smem = 5 * static_cast<size_t>(D / kBox) * kBoxBytes + kSwizzleAtomBytes + 3 * sizeof(uint64_t);
  auto kernel = forward_sm90_kernel<T, D>;
  allow_shared_memory(kernel, smem, "block_sparse_attention");
  const dim3 grid(static_cast<unsigned>(p.num_query_blocks() * (p.block_q / kTile)), static_cast<unsigned>(p.heads_q),
                  static_cast<unsigned>(p.batch));
  kernel<<<grid, kThreads, smem, stream>>>(p, maps);
  check(cudaGetLastError(), "block_sparse_attention", "kernel launch");
}

}  // namespace

bool forward_sm90_supports(const BlockSparseAttentionParams& p, int capability_major) {
#if defined(KC_HAS_SM90A)
  // On by default since its validation on an H100 (every forward test passed); KC_SM90_WGMMA=0
  // falls back to the sm_80 kernel.
  const char* enabled = std::getenv("KC_SM90_WGMMA");
  if (enabled != nullptr && std::strcmp(enabled, "0") == 0) return false;
  // Exactly Hopper: the kernel exists only as sm_90a SASS (PTX JIT on newer GPUs would run an empty body).
  if (capability_major != 9 || !forward_sm80_supports(p, capability_major)) return false;
  if (p.tokens_q <= 0 || p.tokens_k <= 0) return false;
  // A tensor map cannot broadcast: every dimension larger than 1 needs a real stride.
  const auto strided = [&](const std::array<int64_t, 3>& s, int64_t heads, int64_t tokens) {
    return (tokens == 1 || s[2] != 0) && (heads == 1 || s[1] != 0) && (p.varlen() || p.batch == 1 || s[0] != 0);
  };
  return strided(p.q_stride, p.heads_q, p.tokens_q) && strided(p.k_stride, p.heads_kv, p.tokens_k) &&
         strided(p.v_stride, p.heads_kv, p.tokens_k);
#else
  (void)p;
  (void)capability_major;
  return false;
#endif
}

void forward_sm90(const BlockSparseAttentionParams& p, cudaStream_t stream) {
  if (p.dtype == DType::kBFloat16) {
    if (p.head_dim == 64) return launch<__nv_bfloat16, 64>(p, stream);
    return launch<__nv_bfloat16, 128>(p, stream);
  }
  if (p.head_dim == 64) return launch<__half, 64>(p, stream);
  return launch<__half, 128>(p, stream);
}

}  // namespace kc::cuda_detail
