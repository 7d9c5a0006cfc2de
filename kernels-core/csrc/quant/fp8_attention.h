// FP8 (e4m3) block-sparse attention and the float32 -> e4m3 conversion it is fed by.
//
// Inputs are already quantized (the Python layer computes the scales and calls fp8_encode):
//   q8 [B, Hq, Sq, D], k8 [B, Hkv, Sk, D]: e4m3 bytes; a token's real value is
//     decode(q8) * q_scale[b, h, token / q_group]  (one scale per group of q_group tokens: per tile)
//   v8: e4m3 bytes, real value decode(v8) * v_scale[b, h, d] (one scale per channel). Two layouts:
//     token-major [B, Hkv, Sk, D] (v_transposed = false, CPU), or channel-major with the keys of
//     every 16-key group permuted for the tensor cores (v_transposed = true, CUDA; see
//     fp8_value_layout in kernels_core).
//   key_valid: optional uint8 [Sk] (nonzero = real key); padded keys get no probability.
// Sparsity: key-block index lists counts [B, Hq, nqb] / indices [B, Hq, nqb, L] (int32), a row
// walking its list in list order, or dense (no lists).
//
// Numerics (the CPU and CUDA kernels follow the same steps; the pure-torch reference spells them
// out): the keys of a row are visited key block by key block in list order and, inside a block,
// in chunks of 64 from the block's start. Per chunk, in float32 and base 2:
//   s_j = (q8 . k8_j) * q_scale * k_scale_j * softmax_scale * log2(e)   (-inf for padded keys)
//   m' = max(m, max_j s_j);  p_j = 2^(s_j - m');  l = l 2^(m - m') + sum_j p_j
//   acc = acc 2^(m - m') + sum_j e4m3(p_j * 448) v8_j              (P in FP8 with the fixed scale 1/448)
// and at the end out = acc * v_scale / 448 / l, lse = (m + log2(l)) ln(2) (-inf, out 0, for a row
// that sees no key).
#pragma once

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/dtype.h"
#include "common/host_device.h"

namespace kc {

struct Fp8AttentionParams {
  std::uintptr_t q = 0, k = 0, v = 0;                   // uint8 e4m3
  std::uintptr_t q_scale = 0, k_scale = 0, v_scale = 0;  // float32
  std::uintptr_t out = 0, lse = 0;                      // out: `out_dtype`; lse: float32 [B, Hq, Sq]
  DType out_dtype = DType::kFloat32;
  std::uintptr_t key_valid = 0;                         // uint8 [Sk] or 0

  int64_t batch = 0, heads_q = 0, heads_kv = 0, seqlen_q = 0, seqlen_k = 0, head_dim = 0;
  // Element strides (batch, head, token); for v_transposed, v_stride is (batch, head, channel)
  // and a channel's keys are contiguous.
  std::array<int64_t, 3> q_stride{}, k_stride{}, v_stride{}, out_stride{}, lse_stride{};
  bool v_transposed = false;
  // Scales: q_scale [B, Hq, ceil(Sq / q_group)], k_scale [B, Hkv, ceil(Sk / k_group)], v_scale [B, Hkv, D],
  // all contiguous.
  int64_t q_group = 64, k_group = 64;

  std::uintptr_t block_counts = 0, block_indices = 0;
  int64_t indices_width = 0;
  std::array<int64_t, 3> counts_stride{};
  std::array<int64_t, 4> indices_stride{};
  int64_t block_q = 64, block_k = 64;
  float scale = 1.0f;  // softmax scale

  KC_HOST_DEVICE int64_t num_query_blocks() const { return (seqlen_q + block_q - 1) / block_q; }
  KC_HOST_DEVICE int64_t num_key_blocks() const { return (seqlen_k + block_k - 1) / block_k; }

  void validate() const {
    auto fail = [](const std::string& what) { throw std::invalid_argument("fp8_attention: " + what); };
    if (!q || !k || !v || !q_scale || !k_scale || !v_scale || !out || !lse) fail("a tensor address is null");
    if (batch <= 0 || heads_q <= 0 || heads_kv <= 0 || seqlen_q <= 0 || seqlen_k <= 0 || head_dim <= 0)
      fail("sizes must be positive");
    if (heads_q % heads_kv != 0) fail("heads_q must be a multiple of heads_kv");
    if (block_q <= 0 || block_k <= 0 || q_group <= 0 || k_group <= 0) fail("block and group sizes must be positive");
    if ((block_counts == 0) != (block_indices == 0)) fail("block_counts and block_indices go together");
  }
};

// float32 [n] (contiguous) -> e4m3 bytes [n], saturating (see quant/fp8.h).
void fp8_encode_cpu(std::uintptr_t src, std::uintptr_t dst, int64_t n, int num_threads);
void fp8_encode_cuda(std::uintptr_t src, std::uintptr_t dst, int64_t n, std::uintptr_t stream, int device);

void fp8_attention_cpu(const Fp8AttentionParams& params, int num_threads);
// CUDA: FP8 tensor cores (sm_89 and newer); D 64 or 128; v_transposed layout.
void fp8_attention_cuda(const Fp8AttentionParams& params, std::uintptr_t stream, int device);

}  // namespace kc
