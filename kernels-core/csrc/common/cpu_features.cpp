#include "common/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace kc::cpu {
namespace {

bool cpu_has(Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
  // __builtin_cpu_supports also checks that the OS saves the wide registers (XGETBV).
  switch (isa) {
    case Isa::kGeneric:
      return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    case Isa::kAvx512:
      return cpu_has(Isa::kAvx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  }
  return false;
#else
  return isa == Isa::kGeneric;
#endif
}

bool compiled_in(Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
  (void)isa;
  return true;
#else
  return isa == Isa::kGeneric;
#endif
}

Isa parse_isa(const std::string& name) {
  if (name == "generic") return Isa::kGeneric;
  if (name == "avx2") return Isa::kAvx2;
  if (name == "avx512") return Isa::kAvx512;
  throw std::invalid_argument("unknown CPU instruction set '" + name + "' (expected generic, avx2 or avx512)");
}

Isa best_isa() {
  Isa best = Isa::kGeneric;
  for (Isa isa : supported_isas()) best = isa;
  return best;
}

Isa initial_isa() {
  const char* env = std::getenv("KC_CPU_ISA");
  if (env == nullptr || *env == '\0') return best_isa();
  const Isa requested = parse_isa(env);
  // An unsupported request falls back to the best available set rather than crashing later
  // with an illegal instruction; set_active_isa() is the strict interface.
  return (compiled_in(requested) && cpu_has(requested)) ? requested : best_isa();
}

std::atomic<int>& active_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_isa())};
  return slot;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kGeneric:
      return "generic";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> result;
  for (Isa isa : {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512}) {
    if (compiled_in(isa) && cpu_has(isa)) result.push_back(isa);
  }
  return result;
}

Isa active_isa() { return static_cast<Isa>(active_slot().load()); }

void set_active_isa(const std::string& name) {
  const Isa isa = parse_isa(name);
  if (!(compiled_in(isa) && cpu_has(isa))) {
    throw std::invalid_argument(std::string("CPU instruction set '") + name + "' is not supported on this machine");
  }
  active_slot().store(static_cast<int>(isa));
}

}  // namespace kc::cpu
