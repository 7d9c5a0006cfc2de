// CPU rasterizer: OpenMP over (image, tile) pairs; within a tile, pixel by pixel over the
// tile's depth-sorted Gaussians, which are first gathered into a small contiguous array.
//
// The backward walks each pixel's list back to front from the last Gaussian that contributed,
// recovering the transmittance in front of each one from the final value, as gsplat does. The
// gradients of an intersection are summed over the pixels of its tile only, so every tile owns
// its outputs and no two threads write the same memory.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "gaussians/rasterize.h"
#include "gaussians/splat.h"

namespace kc {
namespace {

using gaussians::Splat;
using gaussians::SplatGrad;
using gaussians::SplatSample;

struct TileRange {
  int64_t image, tile_x, tile_y, begin, end;
};

TileRange tile_range(const RasterizeParams& p, int64_t flat_tile) {
  const int64_t tiles_per_image = p.tiles_x * p.tiles_y;
  const auto* offsets = reinterpret_cast<const int32_t*>(p.isect_offsets);
  TileRange r;
  r.image = flat_tile / tiles_per_image;
  const int64_t tile = flat_tile % tiles_per_image;
  r.tile_y = tile / p.tiles_x;
  r.tile_x = tile % p.tiles_x;
  r.begin = offsets[flat_tile];
  r.end = flat_tile + 1 < p.images * tiles_per_image ? offsets[flat_tile + 1] : p.n_isects;
  r.end = std::max(r.begin, r.end);
  return r;
}

// The tile's Gaussians, in front-to-back order, with their colours [count, K].
struct TileSplats {
  std::vector<Splat> splats;
  std::vector<float> colors;

  void gather(const RasterizeParams& p, const TileRange& r) {
    const auto* ids = reinterpret_cast<const int32_t*>(p.flatten_ids);
    const auto* means = reinterpret_cast<const float*>(p.means2d);
    const auto* conics = reinterpret_cast<const float*>(p.conics);
    const auto* opacities = reinterpret_cast<const float*>(p.opacities);
    const auto* colors_in = reinterpret_cast<const float*>(p.colors);
    const int64_t count = r.end - r.begin, k = p.channels;
    splats.resize(count);
    colors.resize(count * k);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t g = ids[r.begin + i];
      splats[i] = gaussians::make_splat(means[2 * g], means[2 * g + 1], conics[3 * g], conics[3 * g + 1],
                                        conics[3 * g + 2], opacities[g]);
      std::copy(colors_in + g * k, colors_in + (g + 1) * k, colors.data() + i * k);
    }
  }
};

}  // namespace

void rasterize_to_pixels_cpu(const RasterizeParams& p, int num_threads) {
  p.validate("rasterize_to_pixels");
  if (!p.render_colors || !p.render_alphas || !p.last_ids) throw std::invalid_argument("rasterize_to_pixels: null output");
  const int64_t k = p.channels, num_tiles = p.images * p.tiles_x * p.tiles_y;
  const auto* backgrounds = reinterpret_cast<const float*>(p.backgrounds);
  auto* out_colors = reinterpret_cast<float*>(p.render_colors);
  auto* out_alphas = reinterpret_cast<float*>(p.render_alphas);
  auto* out_last = reinterpret_cast<int32_t*>(p.last_ids);

#pragma omp parallel num_threads(num_threads)
  {
    TileSplats tile;
    float pixel[RasterizeParams::kMaxChannels];
#pragma omp for schedule(dynamic, 1)
    for (int64_t flat_tile = 0; flat_tile < num_tiles; ++flat_tile) {
      const TileRange r = tile_range(p, flat_tile);
      tile.gather(p, r);
      const int64_t count = r.end - r.begin;
      const int64_t y_end = std::min(p.height, (r.tile_y + 1) * p.tile_size);
      const int64_t x_end = std::min(p.width, (r.tile_x + 1) * p.tile_size);
      for (int64_t y = r.tile_y * p.tile_size; y < y_end; ++y) {
        for (int64_t x = r.tile_x * p.tile_size; x < x_end; ++x) {
          const float px = static_cast<float>(x) + 0.5f, py = static_cast<float>(y) + 0.5f;
          std::fill(pixel, pixel + k, 0.0f);
          float transmittance = 1.0f;
          int64_t last = -1;
          for (int64_t i = 0; i < count; ++i) {
            SplatSample s;
            if (!gaussians::sample_splat(tile.splats[i], px, py, s)) continue;
            const float next = transmittance * (1.0f - s.alpha);
            if (next <= gaussians::kMinTransmittance) break;
            const float weight = s.alpha * transmittance;
            const float* c = tile.colors.data() + i * k;
            for (int64_t ch = 0; ch < k; ++ch) pixel[ch] += c[ch] * weight;
            transmittance = next;
            last = r.begin + i;
          }
          const int64_t pix = (r.image * p.height + y) * p.width + x;
          for (int64_t ch = 0; ch < k; ++ch) {
            const float bg = backgrounds ? backgrounds[r.image * k + ch] : 0.0f;
            out_colors[pix * k + ch] = pixel[ch] + transmittance * bg;
          }
          out_alphas[pix] = 1.0f - transmittance;
          out_last[pix] = static_cast<int32_t>(last);
        }
      }
    }
  }
}

void rasterize_to_pixels_backward_cpu(const RasterizeBackwardParams& b, int num_threads) {
  const RasterizeParams& p = b.forward;
  p.validate("rasterize_to_pixels_backward");
  if (!b.v_render_colors || !b.v_render_alphas || !p.render_alphas || !p.last_ids)
    throw std::invalid_argument("rasterize_to_pixels_backward: null input");
  if (p.n_isects > 0 && (!b.v_means2d || !b.v_conics || !b.v_colors || !b.v_opacities))
    throw std::invalid_argument("rasterize_to_pixels_backward: null output");
  const int64_t k = p.channels, num_tiles = p.images * p.tiles_x * p.tiles_y;
  const auto* backgrounds = reinterpret_cast<const float*>(p.backgrounds);
  const auto* alphas = reinterpret_cast<const float*>(p.render_alphas);
  const auto* last_ids = reinterpret_cast<const int32_t*>(p.last_ids);
  const auto* v_colors_in = reinterpret_cast<const float*>(b.v_render_colors);
  const auto* v_alphas_in = reinterpret_cast<const float*>(b.v_render_alphas);
  auto* v_means = reinterpret_cast<float*>(b.v_means2d);
  auto* v_conics = reinterpret_cast<float*>(b.v_conics);
  auto* v_colors = reinterpret_cast<float*>(b.v_colors);
  auto* v_opacities = reinterpret_cast<float*>(b.v_opacities);

#pragma omp parallel num_threads(num_threads)
  {
    TileSplats tile;
    std::vector<SplatGrad> grads;
    std::vector<float> color_grads;
    float behind[RasterizeParams::kMaxChannels];  // colour accumulated behind the current Gaussian
#pragma omp for schedule(dynamic, 1)
    for (int64_t flat_tile = 0; flat_tile < num_tiles; ++flat_tile) {
      const TileRange r = tile_range(p, flat_tile);
      const int64_t count = r.end - r.begin;
      if (count == 0) continue;
      tile.gather(p, r);
      grads.assign(count, SplatGrad{});
      color_grads.assign(count * k, 0.0f);
      const float* bg = backgrounds ? backgrounds + r.image * k : nullptr;
      const int64_t y_end = std::min(p.height, (r.tile_y + 1) * p.tile_size);
      const int64_t x_end = std::min(p.width, (r.tile_x + 1) * p.tile_size);
      for (int64_t y = r.tile_y * p.tile_size; y < y_end; ++y) {
        for (int64_t x = r.tile_x * p.tile_size; x < x_end; ++x) {
          const int64_t pix = (r.image * p.height + y) * p.width + x;
          const int64_t last = last_ids[pix];
          if (last < r.begin) continue;
          const float px = static_cast<float>(x) + 0.5f, py = static_cast<float>(y) + 0.5f;
          const float* v_color = v_colors_in + pix * k;
          const float final_t = 1.0f - alphas[pix];
          float v_bg_dot = 0.0f;  // sum_k background_k dL/dcolor_k
          if (bg)
            for (int64_t ch = 0; ch < k; ++ch) v_bg_dot += bg[ch] * v_color[ch];
          float transmittance = final_t;
          std::fill(behind, behind + k, 0.0f);
          for (int64_t i = last - r.begin; i >= 0; --i) {
            const Splat& splat = tile.splats[i];
            SplatSample s;
            if (!gaussians::sample_splat(splat, px, py, s)) continue;
            const float inv_one_minus = 1.0f / (1.0f - s.alpha);
            transmittance *= inv_one_minus;  // now the transmittance in front of Gaussian i
            const float weight = s.alpha * transmittance;
            const float* c = tile.colors.data() + i * k;
            float* v_c = color_grads.data() + i * k;
            float v_alpha = 0.0f;
            for (int64_t ch = 0; ch < k; ++ch) {
              v_c[ch] += weight * v_color[ch];
              v_alpha += (c[ch] * transmittance - behind[ch] * inv_one_minus) * v_color[ch];
              behind[ch] += c[ch] * weight;
            }
            v_alpha += final_t * inv_one_minus * (v_alphas_in[pix] - v_bg_dot);
            gaussians::accumulate_splat_grad(splat, s, v_alpha, grads[i]);
          }
        }
      }
      for (int64_t i = 0; i < count; ++i) {
        const int64_t at = r.begin + i;
        v_means[2 * at] = grads[i].x;
        v_means[2 * at + 1] = grads[i].y;
        v_conics[3 * at] = grads[i].a;
        v_conics[3 * at + 1] = grads[i].b;
        v_conics[3 * at + 2] = grads[i].c;
        v_opacities[at] = grads[i].opacity;
        std::copy(color_grads.data() + i * k, color_grads.data() + (i + 1) * k, v_colors + at * k);
      }
    }
  }
}

}  // namespace kc
