// FP8 e4m3 (the OCP "e4m3fn" format of torch.float8_e4m3fn): 1 sign, 4 exponent (bias 7) and 3
// mantissa bits, no infinities, 0x7f/0xff is NaN, largest finite value 448, smallest subnormal 2^-9.
//
// encode: float32 -> e4m3 bits, round to nearest even, saturating: every finite value beyond ±448
// (and ±inf) becomes ±448, NaN stays NaN. For |x| <= 448 this is bit for bit what torch's own
// float32 -> float8_e4m3fn conversion gives (torch turns values >= 464 into NaN instead).
// decode: e4m3 bits -> float32, exact.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/host_device.h"

namespace kc::fp8 {

constexpr float kE4M3Max = 448.0f;

KC_HOST_DEVICE inline uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

KC_HOST_DEVICE inline float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

KC_HOST_DEVICE inline uint8_t encode_e4m3(float f) {
  uint32_t bits = float_bits(f);
  const auto sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  bits &= 0x7fffffffu;
  if (bits > 0x7f800000u) return static_cast<uint8_t>(sign | 0x7fu);  // NaN
  if (bits >= 0x43e00000u) return static_cast<uint8_t>(sign | 0x7eu);  // >= 448 (and inf): saturate
  if (bits < 0x3c800000u) {
    // Below 2^-6: subnormal e4m3, a multiple of 2^-9. Adding 2^14 (whose ulp is 2^-9) rounds to
    // that grid with the FPU's round-to-nearest-even; the low bits then hold the multiple.
    const uint32_t denorm_magic = 141u << 23;  // 2^14
    const float rounded = bits_float(bits) + bits_float(denorm_magic);
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(float_bits(rounded) - denorm_magic));
  }
  // Normal: rebias the exponent (127 -> 7) and round the 23-bit mantissa to 3 bits, ties to even.
  const uint32_t odd = (bits >> 20) & 1u;
  bits += (static_cast<uint32_t>(7 - 127) << 23) + 0x7ffffu + odd;
  return static_cast<uint8_t>(sign | static_cast<uint8_t>(bits >> 20));
}

KC_HOST_DEVICE inline float decode_e4m3(uint8_t code) {
  const uint32_t sign = static_cast<uint32_t>(code & 0x80u) << 24;
  const uint32_t exponent = (code >> 3) & 0xfu, mantissa = code & 0x7u;
  if (exponent == 0xfu && mantissa == 0x7u) return bits_float(sign | 0x7fc00000u);  // NaN
  if (exponent == 0) {
    // m * 2^-9, exact in float32.
    const float magnitude = static_cast<float>(mantissa) * 0.001953125f;
    return sign ? -magnitude : magnitude;
  }
  return bits_float(sign | ((exponent + 127 - 7) << 23) | (mantissa << 20));
}

}  // namespace kc::fp8
