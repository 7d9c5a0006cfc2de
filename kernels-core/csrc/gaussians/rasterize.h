// Tile-based alpha compositing of projected 2-D Gaussians (the `rasterize_to_pixels` stage of
// 3DGS), with gsplat's conventions: pixel centres at (x + 0.5, y + 0.5), front-to-back order
// within a tile, alpha = min(0.999, opacity * exp(-sigma)), Gaussians with alpha < 1/255 skipped,
// and a pixel stops at the first Gaussian that would take its transmittance to 1e-4 or below.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace kc {

struct RasterizeParams {
  // Per image i of I, per Gaussian n of N (all float32, contiguous):
  //   means2d [I, N, 2], conics [I, N, 3] (upper triangle of the inverse 2-D covariance),
  //   colors [I, N, K], opacities [I, N], backgrounds [I, K] or 0.
  // Intersections, sorted by (image, tile, depth): isect_offsets [I, tiles_y, tiles_x] int32
  // (first intersection of each tile), flatten_ids [n_isects] int32 (index into I * N).
  std::uintptr_t means2d = 0, conics = 0, colors = 0, opacities = 0, backgrounds = 0;
  std::uintptr_t isect_offsets = 0, flatten_ids = 0;
  int64_t images = 0, gaussians = 0, channels = 0, n_isects = 0;
  int64_t width = 0, height = 0, tile_size = 16, tiles_x = 0, tiles_y = 0;

  // Forward outputs: render_colors [I, H, W, K], render_alphas [I, H, W], last_ids [I, H, W]
  // int32 (index of the last intersection that contributed, -1 when none).
  std::uintptr_t render_colors = 0, render_alphas = 0, last_ids = 0;

  void validate(const char* op) const {
    auto fail = [op](const std::string& what) { throw std::invalid_argument(std::string(op) + ": " + what); };
    if (!means2d || !conics || !colors || !opacities || !isect_offsets) fail("a tensor address is null");
    if (n_isects > 0 && !flatten_ids) fail("flatten_ids is null");
    if (images <= 0 || gaussians < 0 || channels <= 0 || n_isects < 0) fail("sizes must be positive");
    if (width <= 0 || height <= 0 || tile_size <= 0) fail("image and tile sizes must be positive");
    if (tiles_x != (width + tile_size - 1) / tile_size || tiles_y != (height + tile_size - 1) / tile_size)
      fail("tiles_x / tiles_y do not match the image and tile sizes");
    if (channels > kMaxChannels) fail("at most " + std::to_string(kMaxChannels) + " channels are supported");
  }

  static constexpr int64_t kMaxChannels = 64;
};

struct RasterizeBackwardParams {
  RasterizeParams forward;  // inputs, and the forward's render_alphas and last_ids
  // Incoming gradients: v_render_colors [I, H, W, K], v_render_alphas [I, H, W] (float32).
  std::uintptr_t v_render_colors = 0, v_render_alphas = 0;
  // Gradients per intersection (summed over the pixels of its tile), contiguous float32:
  // v_means2d [n_isects, 2], v_conics [n_isects, 3], v_colors [n_isects, K],
  // v_opacities [n_isects]. The caller scatters them to the Gaussians with flatten_ids, which
  // keeps the kernel free of atomics and its result independent of thread timing.
  std::uintptr_t v_means2d = 0, v_conics = 0, v_colors = 0, v_opacities = 0;
};

void rasterize_to_pixels_cpu(const RasterizeParams& params, int num_threads);
void rasterize_to_pixels_backward_cpu(const RasterizeBackwardParams& params, int num_threads);

}  // namespace kc
