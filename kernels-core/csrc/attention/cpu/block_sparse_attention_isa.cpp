// Compiled once per CPU instruction set; CMake defines KC_ISA (generic, avx2, avx512) and the
// matching compiler flags. block_sparse_attention_dispatch.cpp picks one at run time.
#include "attention/cpu/block_sparse_attention_kernel.h"

namespace kc::cpu::KC_ISA {

void block_sparse_attention_forward_entry(const BlockSparseAttentionParams& params, int num_threads) {
  block_sparse_attention_forward(params, num_threads);
}

}  // namespace kc::cpu::KC_ISA
