// Entry points compiled once per CPU instruction set (see attention_isa.cpp). Included with
// KC_ISA defined by the ISA builds, and expanded for every ISA by attention_dispatch.cpp.
#pragma once

#include "attention/block_selection_params.h"
#include "attention/block_sparse_attention_params.h"
#include "attention/decode_attention_params.h"

#define KC_DECLARE_ATTENTION_ENTRIES(isa)                                                                    \
  namespace kc::cpu::isa {                                                                                   \
  void block_sparse_attention_forward_entry(const BlockSparseAttentionParams& params, int num_threads);     \
  void block_sparse_attention_backward_entry(const BlockSparseAttentionBackwardParams& params, int num_threads); \
  void decode_attention_entry(const DecodeAttentionParams& params, int num_threads);                        \
  void block_scores_entry(const BlockScoresParams& params, int num_threads);                                \
  }

#if defined(KC_ISA)
KC_DECLARE_ATTENTION_ENTRIES(KC_ISA)
#endif
