// Qualifiers for code compiled for both the host and the device (CUDA or the SIMT emulation).
#pragma once

#if defined(__CUDACC__)
#define FASTOPT_HD __host__ __device__ __forceinline__
#else
#define FASTOPT_HD inline __attribute__((always_inline))
#endif

#if defined(__CUDA_ARCH__)
#define FASTOPT_DEVICE_CODE 1
#else
#define FASTOPT_DEVICE_CODE 0
#endif
