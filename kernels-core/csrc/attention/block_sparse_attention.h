// Entry points of the block-sparse attention ops (see block_sparse_attention_params.h).
#pragma once

#include <cstdint>

#include "attention/block_sparse_attention_params.h"

namespace kc {

// CPU entry points run on the calling thread plus an OpenMP team of num_threads.
void block_sparse_attention_forward_cpu(const BlockSparseAttentionParams& params, int num_threads);
void block_sparse_attention_backward_cpu(const BlockSparseAttentionBackwardParams& params, int num_threads);

// CUDA entry points enqueue their kernels on `stream` (a cudaStream_t as an integer) of CUDA
// device `device`. They throw std::runtime_error when the build has no CUDA or a launch fails.
void block_sparse_attention_forward_cuda(const BlockSparseAttentionParams& params, std::uintptr_t stream,
                                         int device);
void block_sparse_attention_backward_cuda(const BlockSparseAttentionBackwardParams& params, std::uintptr_t stream,
                                          int device);

}  // namespace kc
