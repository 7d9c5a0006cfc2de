// Entry points of the block-sparse attention op (see block_sparse_attention_params.h).
#pragma once

#include <cstdint>

#include "attention/block_sparse_attention_params.h"

namespace kc {

// Runs on the calling thread plus an OpenMP team of num_threads.
void block_sparse_attention_forward_cpu(const BlockSparseAttentionParams& params, int num_threads);

// Enqueues the kernel on `stream` (a cudaStream_t as an integer) of CUDA device `device`.
// Throws std::runtime_error when the build has no CUDA or the launch fails.
void block_sparse_attention_forward_cuda(const BlockSparseAttentionParams& params, std::uintptr_t stream,
                                         int device);

}  // namespace kc
