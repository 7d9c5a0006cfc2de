// Arguments of decode attention: a few new query tokens against a KV cache, optionally with a
// per-(batch, key/value head) list of the cache positions that head keeps (KV-cache slimming).
#pragma once

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/dtype.h"
#include "common/host_device.h"

namespace kc {

struct DecodeAttentionParams {
  // q [B, Hq, Sq, D]; k_cache, v_cache [B, Hkv, S, D]; out like q (all `dtype`);
  // lse [B, Hq, Sq] float32, contiguous.
  std::uintptr_t q = 0, k = 0, v = 0, out = 0, lse = 0;
  DType dtype = DType::kFloat32;
  int64_t batch = 0, heads_q = 0, heads_kv = 0, seqlen_q = 0, cache_len = 0, head_dim = 0;
  std::array<int64_t, 3> q_stride{}, k_stride{}, v_stride{}, out_stride{};

  // int32 [B]: valid cache length per batch item (0 = every item uses cache_len).
  std::uintptr_t cache_seqlens = 0;
  // int32 [B, Hkv, N] cache positions per key/value head and int32 [B, Hkv] how many of them
  // are used (0 = all N). Positions outside [0, valid length) are skipped.
  std::uintptr_t kv_indices = 0, kv_counts = 0;
  int64_t num_indices = 0;
  std::array<int64_t, 3> indices_stride{};
  std::array<int64_t, 2> counts_stride{};

  // The Sq queries are the last Sq positions of the sequence: query i sees positions
  // <= valid_length - Sq + i.
  bool causal = false;
  float scale = 1.0f;

  KC_HOST_DEVICE int64_t group_size() const { return heads_q / heads_kv; }

  KC_HOST_DEVICE int64_t valid_length(int64_t b) const {
    if (cache_seqlens == 0) return cache_len;
    const int64_t n = reinterpret_cast<const int32_t*>(cache_seqlens)[b];
    return n < cache_len ? (n < 0 ? 0 : n) : cache_len;
  }

  // Number of candidate keys of (b, hk) and the cache position of candidate j.
  KC_HOST_DEVICE int64_t num_keys(int64_t b, int64_t hk) const {
    if (kv_indices == 0) return valid_length(b);
    if (kv_counts == 0) return num_indices;
    const int64_t n = reinterpret_cast<const int32_t*>(kv_counts)[b * counts_stride[0] + hk * counts_stride[1]];
    return n < num_indices ? (n < 0 ? 0 : n) : num_indices;
  }

  KC_HOST_DEVICE int64_t key_position(int64_t b, int64_t hk, int64_t j) const {
    if (kv_indices == 0) return j;
    return reinterpret_cast<const int32_t*>(kv_indices)[b * indices_stride[0] + hk * indices_stride[1] +
                                                        j * indices_stride[2]];
  }

  void validate() const {
    auto fail = [](const std::string& what) { throw std::invalid_argument("decode_attention: " + what); };
    if (!q || !k || !v || !out || !lse) fail("a tensor address is null");
    if (batch <= 0 || heads_q <= 0 || heads_kv <= 0 || seqlen_q <= 0 || cache_len <= 0 || head_dim <= 0)
      fail("sizes must be positive");
    if (heads_q % heads_kv != 0) fail("heads_q must be a multiple of heads_kv");
    if (kv_counts != 0 && kv_indices == 0) fail("kv_counts needs kv_indices");
  }
};

void decode_attention_cpu(const DecodeAttentionParams& params, int num_threads);
void decode_attention_cuda(const DecodeAttentionParams& params, std::uintptr_t stream, int device);

}  // namespace kc
