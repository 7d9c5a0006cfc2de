// Portable SIMD helpers for the per-ISA CPU kernels.
//
// This header is compiled once per instruction set (generic, avx2, avx512): the including
// translation unit defines KC_ISA and is built with that set's compiler flags. Everything here
// lives in the namespace kc::cpu::KC_ISA so the differently compiled copies never meet at link
// time (an inline function shared between the builds could otherwise run AVX-512 code on a CPU
// without it). For the same reason these kernels avoid STL containers.
//
// Vectors use GCC/Clang vector extensions: the compiler maps them onto the widest registers the
// flags allow (zmm, ymm or xmm), so one kernel source serves every instruction set.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#ifndef KC_ISA
#error "KC_ISA must name the instruction set this translation unit is built for"
#endif

namespace kc::cpu::KC_ISA {

#if defined(__AVX512F__)
constexpr int kVecWidth = 16;
#elif defined(__AVX2__)
constexpr int kVecWidth = 8;
#else
constexpr int kVecWidth = 4;
#endif

typedef float vfloat __attribute__((vector_size(kVecWidth * sizeof(float))));
typedef int32_t vint __attribute__((vector_size(kVecWidth * sizeof(int32_t))));

inline vfloat vload(const float* p) {
  vfloat v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void vstore(float* p, vfloat v) { std::memcpy(p, &v, sizeof(v)); }

inline vfloat vbroadcast(float x) { return vfloat{} + x; }

inline float hsum(vfloat v) {
  float s = 0.0f;
  for (int i = 0; i < kVecWidth; ++i) s += v[i];
  return s;
}

inline float hmax(vfloat v) {
  float m = v[0];
  for (int i = 1; i < kVecWidth; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

// 2^x for x <= 0 (softmax exponents after the row maximum is subtracted). Inputs below -126
// (including -inf) return exactly 0. Cephes exp2f polynomial on [-0.5, 0.5]: relative error
// about 2e-7.
inline vfloat vexp2_nonpositive(vfloat x) {
  const vfloat lowest = vbroadcast(-126.0f);
  const vint underflow = x < lowest;
  x = underflow ? lowest : x;
  const vfloat round_magic = vbroadcast(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const vfloat n = (x + round_magic) - round_magic;
  const vfloat f = x - n;
  vfloat p = vbroadcast(1.535336188319500e-4f);
  p = p * f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  p = p * f + 1.0f;
  const vint exponent = (__builtin_convertvector(n, vint) + 127) << 23;
  vfloat scale;
  std::memcpy(&scale, &exponent, sizeof(scale));
  const vfloat zero = {};
  return underflow ? zero : p * scale;
}

// ---------------------------------------------------------------------------------------------
// Scalar conversions between float and the 16-bit formats (round to nearest even).
// ---------------------------------------------------------------------------------------------
inline float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline uint32_t float_to_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

inline float bf16_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

inline uint16_t float_to_bf16(float f) {
  uint32_t x = float_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

inline float half_to_float_soft(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;  // 2^-24
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return bits_to_float(sign | 0x7f800000u | (mantissa << 13));
  return bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

inline uint16_t float_to_half_soft(float f) {
  const uint32_t x = float_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // rounds to infinity (>= 65520)
  if (ax < 0x38800000u) {                        // below 2^-14: half subnormal or zero
    // a * 2^24 is below 1024 and exact in float; round it to nearest even by the magic add.
    const float scaled = bits_to_float(ax) * 16777216.0f;
    const float rounded = (scaled + 8388608.0f) - 8388608.0f;  // 2^23
    return sign | static_cast<uint16_t>(rounded);
  }
  ax += 0xfffu + ((ax >> 13) & 1u);
  return sign | static_cast<uint16_t>((ax - 0x38000000u) >> 13);
}

// ---------------------------------------------------------------------------------------------
// Row conversions: n elements of the storage type <-> float.
// ---------------------------------------------------------------------------------------------
inline void load_row(const float* src, float* dst, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }

inline void load_row_bf16(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(src[i]);
}

inline void load_row_f16(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
#endif
  for (; i < n; ++i) dst[i] = half_to_float_soft(src[i]);
}

inline void store_row(const float* src, float* dst, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }

inline void store_row_bf16(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = float_to_bf16(src[i]);
}

inline void store_row_f16(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
#endif
  for (; i < n; ++i) dst[i] = float_to_half_soft(src[i]);
}

// Storage types as tags for templates: float, and the two 16-bit formats as raw bits.
struct F32 {
  using storage = float;
  static void load(const storage* s, float* d, int64_t n) { load_row(s, d, n); }
  static void store(const float* s, storage* d, int64_t n) { store_row(s, d, n); }
};
struct F16 {
  using storage = uint16_t;
  static void load(const storage* s, float* d, int64_t n) { load_row_f16(s, d, n); }
  static void store(const float* s, storage* d, int64_t n) { store_row_f16(s, d, n); }
};
struct BF16 {
  using storage = uint16_t;
  static void load(const storage* s, float* d, int64_t n) { load_row_bf16(s, d, n); }
  static void store(const float* s, storage* d, int64_t n) { store_row_bf16(s, d, n); }
};

}  // namespace kc::cpu::KC_ISA
