// Run-time choice of the CPU instruction set for the per-ISA kernel builds.
#pragma once

#include <string>
#include <vector>

namespace kc::cpu {

enum class Isa : int { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

const char* isa_name(Isa isa);

// Instruction sets this build contains and this CPU (and OS) can run, lowest first.
std::vector<Isa> supported_isas();

// The set the kernels use now: the best supported one, or the one named by the environment
// variable KC_CPU_ISA (generic, avx2, avx512) when it is supported, or set_active_isa().
Isa active_isa();

// Throws std::invalid_argument when `name` is unknown or not supported here.
void set_active_isa(const std::string& name);

}  // namespace kc::cpu
