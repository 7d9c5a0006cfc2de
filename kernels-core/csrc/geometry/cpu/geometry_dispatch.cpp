// Run-time choice of the CPU instruction-set build for the geometry entry points.
#include <stdexcept>

#include "common/cpu_features.h"
#include "geometry/nearest_neighbor.h"

#define KC_DECLARE_GEOMETRY_ENTRIES(isa)                                                       \
  namespace kc::cpu::isa {                                                                     \
  void nearest_neighbor_entry(const NearestNeighborParams& params, int num_threads);           \
  }
KC_DECLARE_GEOMETRY_ENTRIES(generic)
#if defined(__x86_64__) || defined(_M_X64)
KC_DECLARE_GEOMETRY_ENTRIES(avx2)
KC_DECLARE_GEOMETRY_ENTRIES(avx512)
#endif

namespace kc {

void nearest_neighbor_cpu(const NearestNeighborParams& params, int num_threads) {
  params.validate();
  if (num_threads < 1) throw std::invalid_argument("nearest_neighbor: num_threads must be >= 1");
  switch (cpu::active_isa()) {
#if defined(__x86_64__) || defined(_M_X64)
    case cpu::Isa::kAvx512:
      return cpu::avx512::nearest_neighbor_entry(params, num_threads);
    case cpu::Isa::kAvx2:
      return cpu::avx2::nearest_neighbor_entry(params, num_threads);
#endif
    default:
      return cpu::generic::nearest_neighbor_entry(params, num_threads);
  }
}

}  // namespace kc
