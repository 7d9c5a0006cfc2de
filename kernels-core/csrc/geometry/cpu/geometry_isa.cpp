// Compiled once per CPU instruction set (see attention/cpu/attention_isa.cpp for the scheme).
#include "geometry/cpu/nearest_neighbor_kernel.h"

namespace kc::cpu::KC_ISA {

void nearest_neighbor_entry(const NearestNeighborParams& params, int num_threads) {
  nearest_neighbor(params, num_threads);
}

}  // namespace kc::cpu::KC_ISA
