// Register-blocked fp32 micro-kernels shared by the CPU attention kernels (forward, backward,
// decode, block scores). Compiled once per instruction set, like everything under cpu/.
//
// Two products cover every matmul of attention:
//   qk: s[r, c]  = sum_d a[r, d] * bt[d, c]     a broadcast per element, bt streamed as vectors
//   pv: o[r, :] += sum_j p(r, j) * v[j, :]      p broadcast per element (any strides), v vectors
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "common/cpu_vec.h"

namespace kc::cpu::KC_ISA {
namespace attention_detail {

constexpr int kW = kVecWidth;
// Register blocking: kRows rows x kCols vectors of accumulators (24 of 32 zmm on AVX-512,
// 12 of 16 ymm/xmm otherwise, leaving room for the operand loads).
constexpr int kRows = 6;
constexpr int kCols = kVecWidth == 16 ? 4 : 2;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
// Local helpers instead of std::min/std::max: nothing here may be shared with the other ISA builds.
inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

inline float* alloc_floats(int64_t n) {
  const size_t bytes = static_cast<size_t>(round_up(n * static_cast<int64_t>(sizeof(float)), 64));
  return static_cast<float*>(std::aligned_alloc(64, bytes == 0 ? 64 : bytes));
}

// An owning fp32 buffer (64-byte aligned, uninitialised); ok() is false when allocation failed.
class FloatBuffer {
 public:
  FloatBuffer() = default;
  explicit FloatBuffer(int64_t n) : data_(alloc_floats(n)) {}
  ~FloatBuffer() { std::free(data_); }
  FloatBuffer(const FloatBuffer&) = delete;
  FloatBuffer& operator=(const FloatBuffer&) = delete;
  float* get() const { return data_; }
  bool ok() const { return data_ != nullptr; }

 private:
  float* data_ = nullptr;
};

template <int R, int C>
inline void qk_tile(const float* a, int64_t lda, const float* bt, int64_t ldb, int64_t depth, float* s,
                    int64_t lds) {
  vfloat acc[R][C] = {};
  for (int64_t d = 0; d < depth; ++d) {
    vfloat bv[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) bv[c] = vload(bt + d * ldb + c * kW);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const vfloat av = vbroadcast(a[r * lda + d]);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) acc[r][c] += av * bv[c];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) vstore(s + r * lds + c * kW, acc[r][c]);
  }
}

// p(r, j) = p[r * ldp_r + j * ldp_j], so a transposed operand costs nothing.
template <int R, int C>
inline void pv_tile(const float* p, int64_t ldp_r, int64_t ldp_j, const float* v, int64_t ldv, int64_t keys,
                    float* o, int64_t ldo) {
  vfloat acc[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = vload(o + r * ldo + c * kW);
  }
  for (int64_t j = 0; j < keys; ++j) {
    vfloat vv[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) vv[c] = vload(v + j * ldv + c * kW);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const vfloat pv = vbroadcast(p[r * ldp_r + j * ldp_j]);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) acc[r][c] += pv * vv[c];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) vstore(o + r * ldo + c * kW, acc[r][c]);
  }
}

// s[rows, vectors * kW] = a[rows, depth] bt[depth, vectors * kW]: full register tiles, then edges.
inline void qk_block(const float* a, int64_t lda, const float* bt, int64_t ldb, int64_t depth, float* s,
                     int64_t lds, int64_t rows, int64_t vectors) {
  int64_t c = 0;
  for (; c + kCols <= vectors; c += kCols) {
    int64_t r = 0;
    for (; r + kRows <= rows; r += kRows)
      qk_tile<kRows, kCols>(a + r * lda, lda, bt + c * kW, ldb, depth, s + r * lds + c * kW, lds);
    for (; r < rows; ++r) qk_tile<1, kCols>(a + r * lda, lda, bt + c * kW, ldb, depth, s + r * lds + c * kW, lds);
  }
  for (; c < vectors; ++c) {
    int64_t r = 0;
    for (; r + kRows <= rows; r += kRows)
      qk_tile<kRows, 1>(a + r * lda, lda, bt + c * kW, ldb, depth, s + r * lds + c * kW, lds);
    for (; r < rows; ++r) qk_tile<1, 1>(a + r * lda, lda, bt + c * kW, ldb, depth, s + r * lds + c * kW, lds);
  }
}

// o[rows, vectors * kW] += p(rows, keys) v[keys, vectors * kW].
inline void pv_block(const float* p, int64_t ldp_r, int64_t ldp_j, const float* v, int64_t ldv, int64_t keys,
                     float* o, int64_t ldo, int64_t rows, int64_t vectors) {
  int64_t c = 0;
  for (; c + kCols <= vectors; c += kCols) {
    int64_t r = 0;
    for (; r + kRows <= rows; r += kRows)
      pv_tile<kRows, kCols>(p + r * ldp_r, ldp_r, ldp_j, v + c * kW, ldv, keys, o + r * ldo + c * kW, ldo);
    for (; r < rows; ++r)
      pv_tile<1, kCols>(p + r * ldp_r, ldp_r, ldp_j, v + c * kW, ldv, keys, o + r * ldo + c * kW, ldo);
  }
  for (; c < vectors; ++c) {
    int64_t r = 0;
    for (; r + kRows <= rows; r += kRows)
      pv_tile<kRows, 1>(p + r * ldp_r, ldp_r, ldp_j, v + c * kW, ldv, keys, o + r * ldo + c * kW, ldo);
    for (; r < rows; ++r)
      pv_tile<1, 1>(p + r * ldp_r, ldp_r, ldp_j, v + c * kW, ldv, keys, o + r * ldo + c * kW, ldo);
  }
}

// Masks scores outside [0, visible) to -inf and folds the block into the running softmax state
// (scores in the log2 domain). Returns false when the row sees no key of this block (its
// probabilities are then all zero).
inline bool softmax_update_row(float* srow, int64_t width, int64_t visible, float* m, float* l, float* orow,
                               int64_t Dv) {
  if (visible <= 0) {
    std::memset(srow, 0, sizeof(float) * width);
    return false;
  }
  for (int64_t c = visible; c < width; ++c) srow[c] = kNegInf;
  vfloat vmax = vbroadcast(kNegInf);
  for (int64_t c = 0; c < width; c += kW) {
    const vfloat x = vload(srow + c);
    vmax = x > vmax ? x : vmax;
  }
  const float row_max = hmax(vmax);
  const float m_new = row_max > *m ? row_max : *m;
  const vfloat m_vec = vbroadcast(m_new);
  vfloat vsum = {};
  for (int64_t c = 0; c < width; c += kW) {
    const vfloat pexp = vexp2_nonpositive(vload(srow + c) - m_vec);
    vstore(srow + c, pexp);
    vsum += pexp;
  }
  const float alpha = std::exp2(*m - m_new);  // 0 on the first visited block (m = -inf)
  *l = *l * alpha + hsum(vsum);
  *m = m_new;
  if (alpha != 1.0f) {
    const vfloat a = vbroadcast(alpha);
    for (int64_t c = 0; c < Dv; c += kW) vstore(orow + c, vload(orow + c) * a);
  }
  return true;
}

// Writes O / l (as T) and lse = (m + log2 l) ln 2; a row that saw no key gets zeros and -inf.
template <typename T>
inline void finish_row(float* orow, float m, float l, int64_t D, typename T::storage* out, float* lse) {
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  for (int64_t d = 0; d < D; ++d) orow[d] *= inv;
  T::store(orow, out, D);
  *lse = l > 0.0f ? (m + std::log2(l)) * kLn2 : kNegInf;
}

}  // namespace attention_detail
}  // namespace kc::cpu::KC_ISA
