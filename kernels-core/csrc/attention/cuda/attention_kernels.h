// Internal launchers of the CUDA attention kernels; block_sparse_attention_cuda.cu picks one.
#pragma once

#include <cuda_runtime.h>

#include "attention/block_sparse_attention_params.h"
#include "attention/decode_attention_params.h"

namespace kc::cuda_detail {
namespace decode {
struct SplitLayout;
}

// Portable fp32-math kernels: every dtype, head dims up to 256, any block size.
void forward_simt(const BlockSparseAttentionParams& p, cudaStream_t stream);
// The backward's first pass: delta [B, Hq, max Sq] = rowsum(dO * O) - dlse, float32.
void backward_delta(const BlockSparseAttentionBackwardParams& p, cudaStream_t stream, float* delta);
void backward_simt(const BlockSparseAttentionBackwardParams& p, cudaStream_t stream, const float* delta);
// Decode's split pass (see decode_split.cuh for the layout, workspace and merge pass).
void decode_simt(const DecodeAttentionParams& p, const decode::SplitLayout& L, cudaStream_t stream, float* ws);
bool decode_sm80_supports(const DecodeAttentionParams& p, int capability_major);
void decode_sm80(const DecodeAttentionParams& p, const decode::SplitLayout& L, cudaStream_t stream, float* ws);

// Tensor-core forward for sm_80+ (mma.sync, cp.async). Returns false, without launching, when
// the inputs are outside what it supports (see forward_sm80_supports).
bool forward_sm80_supports(const BlockSparseAttentionParams& p, int capability_major);
void forward_sm80(const BlockSparseAttentionParams& p, cudaStream_t stream);
// Hopper forward (wgmma + TMA), used on sm_90 unless KC_SM90_WGMMA=0; needs a build with sm_90a
// SASS (KC_HAS_SM90A).
bool forward_sm90_supports(const BlockSparseAttentionParams& p, int capability_major);
void forward_sm90(const BlockSparseAttentionParams& p, cudaStream_t stream);

// Tensor-core backward (dK/dV and dQ passes) under the forward's conditions plus aligned gradients.
bool backward_sm80_supports(const BlockSparseAttentionBackwardParams& p, int capability_major);
void backward_sm80(const BlockSparseAttentionBackwardParams& p, cudaStream_t stream, const float* delta);

}  // namespace kc::cuda_detail
