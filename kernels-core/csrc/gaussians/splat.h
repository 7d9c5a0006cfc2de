// One projected Gaussian evaluated at one pixel: the arithmetic the CPU and CUDA rasterizers
// share, so both follow gsplat's rules to the bit where the hardware allows.
#pragma once

#include <cmath>

#include "common/host_device.h"

namespace kc::gaussians {

constexpr float kMinAlpha = 1.0f / 255.0f;   // fainter contributions are skipped
constexpr float kMaxAlpha = 0.999f;          // alpha is clamped here (no gradient when clamped)
constexpr float kMinTransmittance = 1e-4f;   // a pixel stops before T would reach this

struct Splat {
  float x, y;     // centre in pixels
  float a, b, c;  // conic: sigma = 0.5 (a dx^2 + c dy^2) + b dx dy
  float opacity;
  // Beyond this sigma, opacity * exp(-sigma) < kMinAlpha for sure: the exp is skipped (pure
  // speed; a small margin leaves borderline cases to the exact test).
  float max_sigma;
};

KC_HOST_DEVICE inline Splat make_splat(float x, float y, float a, float b, float c, float opacity) {
  const float max_sigma = opacity > 0.0f ? logf(opacity / kMinAlpha) + 1e-3f : -1.0f;
  return Splat{x, y, a, b, c, opacity, max_sigma};
}

struct SplatSample {
  float dx, dy;  // centre minus pixel centre
  float vis;     // exp(-sigma)
  float alpha;   // min(kMaxAlpha, opacity * vis)
};

// Evaluates `s` at the pixel centre (px, py); false when the Gaussian does not contribute there.
KC_HOST_DEVICE inline bool sample_splat(const Splat& s, float px, float py, SplatSample& out) {
  out.dx = s.x - px;
  out.dy = s.y - py;
  const float sigma = 0.5f * (s.a * out.dx * out.dx + s.c * out.dy * out.dy) + s.b * out.dx * out.dy;
  if (sigma < 0.0f || sigma > s.max_sigma) return false;
  out.vis = expf(-sigma);
  out.alpha = fminf(kMaxAlpha, s.opacity * out.vis);
  return out.alpha >= kMinAlpha;
}

// Gradients of one sample with respect to the splat, given dL/dalpha of that sample. Nothing
// flows back where alpha was clamped to kMaxAlpha.
struct SplatGrad {
  float x = 0, y = 0, a = 0, b = 0, c = 0, opacity = 0;
};

KC_HOST_DEVICE inline void accumulate_splat_grad(const Splat& s, const SplatSample& p, float v_alpha,
                                                 SplatGrad& g) {
  if (s.opacity * p.vis > kMaxAlpha) return;
  const float v_sigma = -s.opacity * p.vis * v_alpha;
  g.a += 0.5f * v_sigma * p.dx * p.dx;
  g.b += v_sigma * p.dx * p.dy;
  g.c += 0.5f * v_sigma * p.dy * p.dy;
  g.x += v_sigma * (s.a * p.dx + s.b * p.dy);
  g.y += v_sigma * (s.b * p.dx + s.c * p.dy);
  g.opacity += p.vis * v_alpha;
}

}  // namespace kc::gaussians
