// Run-time choice of the CPU instruction-set build for each attention entry point.
#include <stdexcept>

#include "attention/block_selection_params.h"
#include "attention/block_sparse_attention.h"
#include "attention/decode_attention_params.h"
#include "attention/cpu/attention_isa_entries.h"
#include "common/cpu_features.h"

KC_DECLARE_ATTENTION_ENTRIES(generic)
#if defined(__x86_64__) || defined(_M_X64)
KC_DECLARE_ATTENTION_ENTRIES(avx2)
KC_DECLARE_ATTENTION_ENTRIES(avx512)
#define KC_DISPATCH_ISA(entry, ...)                 \
  switch (cpu::active_isa()) {                      \
    case cpu::Isa::kAvx512:                         \
      return cpu::avx512::entry(__VA_ARGS__);       \
    case cpu::Isa::kAvx2:                           \
      return cpu::avx2::entry(__VA_ARGS__);         \
    default:                                        \
      return cpu::generic::entry(__VA_ARGS__);      \
  }
#else
#define KC_DISPATCH_ISA(entry, ...) return cpu::generic::entry(__VA_ARGS__);
#endif

namespace kc {
namespace {

void check_threads(int num_threads) {
  if (num_threads < 1) throw std::invalid_argument("num_threads must be >= 1");
}

}  // namespace

void block_sparse_attention_forward_cpu(const BlockSparseAttentionParams& params, int num_threads) {
  params.validate();
  check_threads(num_threads);
  KC_DISPATCH_ISA(block_sparse_attention_forward_entry, params, num_threads)
}

void block_sparse_attention_backward_cpu(const BlockSparseAttentionBackwardParams& params, int num_threads) {
  params.validate_backward();
  check_threads(num_threads);
  KC_DISPATCH_ISA(block_sparse_attention_backward_entry, params, num_threads)
}

void decode_attention_cpu(const DecodeAttentionParams& params, int num_threads) {
  params.validate();
  check_threads(num_threads);
  KC_DISPATCH_ISA(decode_attention_entry, params, num_threads)
}

void block_scores_cpu(const BlockScoresParams& params, int num_threads) {
  params.validate();
  check_threads(num_threads);
  KC_DISPATCH_ISA(block_scores_entry, params, num_threads)
}

}  // namespace kc
