// FP8 conversion and FP8 block-sparse attention on the CPU (numerics: quant/fp8_attention.h).
//
// The CPU has no FP8 arithmetic: codes are decoded to float32 (exactly) and the products run in
// float32, in the same order of steps as the CUDA kernel, so both give the same result up to
// float32 rounding. Parallel over (batch, head, query block, tile of 16 query rows); each key
// chunk is decoded once per tile. The output is written as float32 (out_dtype must be float32
// here; the Python layer casts).
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "quant/fp8.h"
#include "quant/fp8_attention.h"

namespace kc {
namespace {

constexpr int64_t kChunk = 64;     // keys per online-softmax step (as on the GPU)
constexpr int64_t kTileRows = 16;  // query rows sharing one decoded key chunk
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

const std::array<float, 256>& decode_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[c] = fp8::decode_e4m3(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

// One tile of query rows [i0, i0 + rows) of (b, h), all inside query block qb.
struct TileWork {
  const Fp8AttentionParams& p;
  const std::array<float, 256>& lut;
  int64_t b, h, qb, i0, rows;

  void run(std::vector<float>& buffers) const {
    const int64_t D = p.head_dim, hk = h / (p.heads_q / p.heads_kv);
    buffers.resize(static_cast<size_t>(kTileRows * D * 2 + kChunk * D * 2 + kTileRows * kChunk));
    float* q = buffers.data();           // [rows, D] decoded codes
    float* acc = q + kTileRows * D;      // [rows, D]
    float* kc = acc + kTileRows * D;     // [chunk, D]
    float* vc = kc + kChunk * D;         // [chunk, D]
    float* s = vc + kChunk * D;          // [rows, chunk]
    std::fill(acc, acc + kTileRows * D, 0.0f);
    float m[kTileRows], l[kTileRows], qs[kTileRows];

    const auto* q8 = reinterpret_cast<const uint8_t*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
    const auto* k8 = reinterpret_cast<const uint8_t*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1];
    const auto* v8 = reinterpret_cast<const uint8_t*>(p.v) + b * p.v_stride[0] + hk * p.v_stride[1];
    const auto* q_scale = reinterpret_cast<const float*>(p.q_scale);
    const auto* k_scale = reinterpret_cast<const float*>(p.k_scale);
    const auto* v_scale = reinterpret_cast<const float*>(p.v_scale);
    const auto* key_valid = reinterpret_cast<const uint8_t*>(p.key_valid);
    const int64_t q_groups = (p.seqlen_q + p.q_group - 1) / p.q_group;
    const int64_t k_groups = (p.seqlen_k + p.k_group - 1) / p.k_group;
    const float* k_scale_row = k_scale + (b * p.heads_kv + hk) * k_groups;
    const float score_scale = p.scale * kLog2e;

    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* src = q8 + (i0 + r) * p.q_stride[2];
      for (int64_t d = 0; d < D; ++d) q[r * D + d] = lut[src[d]];
      qs[r] = q_scale[(b * p.heads_q + h) * q_groups + (i0 + r) / p.q_group] * score_scale;
      m[r] = kNegInf;
      l[r] = 0.0f;
    }

    int64_t list_length = p.num_key_blocks();
    const int32_t* list = nullptr;
    if (p.block_counts != 0) {
      const auto* counts = reinterpret_cast<const int32_t*>(p.block_counts);
      list_length = std::min<int64_t>(
          counts[b * p.counts_stride[0] + h * p.counts_stride[1] + qb * p.counts_stride[2]], p.indices_width);
      list = reinterpret_cast<const int32_t*>(p.block_indices) + b * p.indices_stride[0] + h * p.indices_stride[1] +
             qb * p.indices_stride[2];
    }
    for (int64_t j = 0; j < list_length; ++j) {
      const int64_t kb = list ? list[j * p.indices_stride[3]] : j;
      if (kb < 0 || kb >= p.num_key_blocks()) continue;
      const int64_t block_end = std::min(kb * p.block_k + p.block_k, p.seqlen_k);
      for (int64_t c0 = kb * p.block_k; c0 < block_end; c0 += kChunk) {
        const int64_t n = std::min(kChunk, block_end - c0);
        for (int64_t t = 0; t < n; ++t) {
          const uint8_t* ks = k8 + (c0 + t) * p.k_stride[2];
          for (int64_t d = 0; d < D; ++d) kc[t * D + d] = lut[ks[d]];
          const uint8_t* vs = v8 + (c0 + t) * p.v_stride[2];
          for (int64_t d = 0; d < D; ++d) vc[t * D + d] = lut[vs[d]];
        }
        for (int64_t r = 0; r < rows; ++r) {
          float* sr = s + r * kChunk;
          float chunk_max = kNegInf;
          for (int64_t t = 0; t < n; ++t) {
            float dot = 0.0f;
            const float* qr = q + r * D;
            const float* kt = kc + t * D;
            for (int64_t d = 0; d < D; ++d) dot += qr[d] * kt[d];
            const int64_t key = c0 + t;
            const bool valid = key_valid == nullptr || key_valid[key] != 0;
            sr[t] = valid ? dot * qs[r] * k_scale_row[key / p.k_group] : kNegInf;
            chunk_max = std::max(chunk_max, sr[t]);
          }
          const float m_new = std::max(m[r], chunk_max);
          if (m_new == kNegInf) continue;  // nothing visible yet
          const float alpha = std::exp2(m[r] - m_new);
          float* ar = acc + r * D;
          for (int64_t d = 0; d < D; ++d) ar[d] *= alpha;
          float sum = 0.0f;
          for (int64_t t = 0; t < n; ++t) {
            const float prob = std::exp2(sr[t] - m_new);
            sum += prob;
            const float pq = lut[fp8::encode_e4m3(prob * fp8::kE4M3Max)];
            if (pq == 0.0f) continue;
            const float* vt = vc + t * D;
            for (int64_t d = 0; d < D; ++d) ar[d] += pq * vt[d];
          }
          l[r] = l[r] * alpha + sum;
          m[r] = m_new;
        }
      }
    }

    const float* vs_row = v_scale + (b * p.heads_kv + hk) * D;
    float* out = reinterpret_cast<float*>(p.out);
    float* lse = reinterpret_cast<float*>(p.lse);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r;
      float* o = out + b * p.out_stride[0] + h * p.out_stride[1] + i * p.out_stride[2];
      float& lse_i = lse[b * p.lse_stride[0] + h * p.lse_stride[1] + i * p.lse_stride[2]];
      if (l[r] == 0.0f) {
        std::fill(o, o + D, 0.0f);
        lse_i = kNegInf;
        continue;
      }
      const float norm = 1.0f / (fp8::kE4M3Max * l[r]);
      for (int64_t d = 0; d < D; ++d) o[d] = acc[r * D + d] * vs_row[d] * norm;
      lse_i = (m[r] + std::log2(l[r])) * kLn2;
    }
  }
};

}  // namespace

void fp8_encode_cpu(std::uintptr_t src, std::uintptr_t dst, int64_t n, int num_threads) {
  const auto* x = reinterpret_cast<const float*>(src);
  auto* y = reinterpret_cast<uint8_t*>(dst);
#pragma omp parallel for num_threads(num_threads) schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = fp8::encode_e4m3(x[i]);
}

void fp8_attention_cpu(const Fp8AttentionParams& params, int num_threads) {
  params.validate();
  if (params.out_dtype != DType::kFloat32) {
    throw std::invalid_argument("fp8_attention (CPU): the output buffer must be float32");
  }
  if (params.v_transposed) {
    throw std::invalid_argument("fp8_attention (CPU): v must be token-major (v_transposed = false)");
  }
  const auto& lut = decode_table();
  const int64_t tiles_per_block = (params.block_q + kTileRows - 1) / kTileRows;
  const int64_t nqb = params.num_query_blocks();
  const int64_t total = params.batch * params.heads_q * nqb * tiles_per_block;
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<float> buffers;
#pragma omp for schedule(dynamic, 1)
    for (int64_t w = 0; w < total; ++w) {
      const int64_t tile = w % tiles_per_block;
      const int64_t qb = (w / tiles_per_block) % nqb;
      const int64_t h = (w / (tiles_per_block * nqb)) % params.heads_q;
      const int64_t b = w / (tiles_per_block * nqb * params.heads_q);
      const int64_t i0 = qb * params.block_q + tile * kTileRows;
      const int64_t block_end = std::min(qb * params.block_q + params.block_q, params.seqlen_q);
      if (i0 >= block_end) continue;
      TileWork{params, lut, b, h, qb, i0, std::min(kTileRows, block_end - i0)}.run(buffers);
    }
  }
}

}  // namespace kc
