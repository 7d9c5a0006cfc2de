// KC_HOST_DEVICE marks small inline helpers of the parameter structs that both the host code
// and the CUDA kernels call.
#pragma once

#if defined(__CUDACC__)
#define KC_HOST_DEVICE __host__ __device__
#else
#define KC_HOST_DEVICE
#endif
