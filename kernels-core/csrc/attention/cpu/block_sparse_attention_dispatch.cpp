#include "attention/block_sparse_attention.h"

#include <stdexcept>

#include "common/cpu_features.h"

namespace kc::cpu {

#define KC_DECLARE_ISA_ENTRY(isa) \
  namespace isa {                 \
  void block_sparse_attention_forward_entry(const BlockSparseAttentionParams& params, int num_threads); \
  }
KC_DECLARE_ISA_ENTRY(generic)
#if defined(__x86_64__) || defined(_M_X64)
KC_DECLARE_ISA_ENTRY(avx2)
KC_DECLARE_ISA_ENTRY(avx512)
#endif
#undef KC_DECLARE_ISA_ENTRY

}  // namespace kc::cpu

namespace kc {

void block_sparse_attention_forward_cpu(const BlockSparseAttentionParams& params, int num_threads) {
  params.validate();
  if (num_threads < 1) throw std::invalid_argument("block_sparse_attention: num_threads must be >= 1");
  switch (cpu::active_isa()) {
#if defined(__x86_64__) || defined(_M_X64)
    case cpu::Isa::kAvx512:
      cpu::avx512::block_sparse_attention_forward_entry(params, num_threads);
      return;
    case cpu::Isa::kAvx2:
      cpu::avx2::block_sparse_attention_forward_entry(params, num_threads);
      return;
#endif
    default:
      cpu::generic::block_sparse_attention_forward_entry(params, num_threads);
      return;
  }
}

}  // namespace kc
