// Compiled once per CPU instruction set; CMake defines KC_ISA (generic, avx2, avx512) and the
// matching compiler flags. attention_dispatch.cpp picks one at run time.
#include "attention/cpu/attention_isa_entries.h"
#include "attention/cpu/block_sparse_attention_backward_kernel.h"
#include "attention/cpu/block_scores_kernel.h"
#include "attention/cpu/block_sparse_attention_kernel.h"
#include "attention/cpu/decode_attention_kernel.h"

namespace kc::cpu::KC_ISA {

void block_sparse_attention_forward_entry(const BlockSparseAttentionParams& params, int num_threads) {
  block_sparse_attention_forward(params, num_threads);
}

void block_sparse_attention_backward_entry(const BlockSparseAttentionBackwardParams& params, int num_threads) {
  block_sparse_attention_backward(params, num_threads);
}

void decode_attention_entry(const DecodeAttentionParams& params, int num_threads) {
  decode_attention(params, num_threads);
}

void block_scores_entry(const BlockScoresParams& params, int num_threads) { block_scores(params, num_threads); }

}  // namespace kc::cpu::KC_ISA
