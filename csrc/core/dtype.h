// Element types and their float32 load/store, shared by every engine.
//
// Low-precision values are stored as raw 16-bit patterns; arithmetic always happens in float32.
// Host conversions are branch-free (so loops vectorize) and round to nearest even, bit-identical
// to c10::Half / c10::BFloat16 and to the CUDA intrinsics used on the device.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "macros.h"

#if FASTOPT_DEVICE_CODE
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace fastopt {

// q8: a state stored as blockwise 8-bit codes with a float32 absmax per block (quant8.h); states
// only, never a param or a grad.
enum class DType : int32_t { f32 = 0, f16 = 1, bf16 = 2, q8 = 3 };

struct half_t {
  uint16_t bits;
};
struct bfloat16_t {
  uint16_t bits;
};

FASTOPT_HD uint32_t float_bits(float f) {
#if FASTOPT_DEVICE_CODE
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

FASTOPT_HD float bits_float(uint32_t u) {
#if FASTOPT_DEVICE_CODE
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// IEEE half -> float (exact). Host version after M. Maratyszcza's FP16 library.
FASTOPT_HD float half_to_float(uint16_t h) {
#if FASTOPT_DEVICE_CODE
  return __half2float(__ushort_as_half(h));
#else
  const uint32_t w = uint32_t(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = bits_float((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = bits_float((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t magnitude = two_w < (1u << 27) ? float_bits(denormalized) : float_bits(normalized);
  return bits_float(sign | magnitude);
#endif
}

// float -> IEEE half, round to nearest even, NaN -> quiet NaN.
FASTOPT_HD uint16_t float_to_half(float f) {
#if FASTOPT_DEVICE_CODE
  return __half_as_ushort(__float2half_rn(f));
#else
  float base = (__builtin_fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t w = float_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  base = bits_float((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = float_bits(base);
  const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  return uint16_t((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
#endif
}

// x when mask is all ones, +0 when it is zero: an exact select on a uniform flag written as a
// bit mask, because compilers do not vectorize selects on loop-invariant scalar conditions.
FASTOPT_HD float masked(float x, uint32_t mask) {
  return bits_float(float_bits(x) & mask);
}
FASTOPT_HD uint32_t mask_of(bool keep) {
  return keep ? 0xFFFFFFFFu : 0u;
}

// torch's grad.add(param, alpha=wd), the L2 term of SGD, Adam, Adagrad, RMSprop and LARS: its
// CPU and CUDA kernels round wd * p + g once (a fused multiply-add), so this does too; fmaf is
// exact-rounded on every instruction set (vfmadd with AVX2/AVX-512, FFMA on the GPU, libm on
// the baseline build), so the bits stay the same on every code path. Where g + wd * p cancels,
// two roundings would flip the sign of a normalized step (Adagrad, RMSprop, Adam).
FASTOPT_HD float add_scaled(float g, float wd, float p) {
  return fmaf(wd, p, g);
}

// add_scaled(g, wd, p) when mask is all ones (torch adds only for wd != 0), g when it is zero.
FASTOPT_HD float add_scaled_masked(float g, float wd, float p, uint32_t mask) {
  return bits_float((float_bits(add_scaled(g, wd, p)) & mask) | (float_bits(g) & ~mask));
}

FASTOPT_HD float bfloat16_to_float(uint16_t b) {
  return bits_float(uint32_t(b) << 16);
}

// float -> bfloat16, round to nearest even, NaN -> quiet NaN (as c10::BFloat16).
FASTOPT_HD uint16_t float_to_bfloat16(float f) {
#if FASTOPT_DEVICE_CODE
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
#else
  const uint32_t u = float_bits(f);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return uint16_t(f != f ? 0x7FC0u : rounded);
#endif
}

FASTOPT_HD float load(const float* p) {
  return *p;
}
FASTOPT_HD float load(const half_t* p) {
  return half_to_float(p->bits);
}
FASTOPT_HD float load(const bfloat16_t* p) {
  return bfloat16_to_float(p->bits);
}
FASTOPT_HD void store(float* p, float v) {
  *p = v;
}
FASTOPT_HD void store(half_t* p, float v) {
  p->bits = float_to_half(v);
}
FASTOPT_HD void store(bfloat16_t* p, float v) {
  p->bits = float_to_bfloat16(v);
}

template <class T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::f32;
};
template <>
struct dtype_of<half_t> {
  static constexpr DType value = DType::f16;
};
template <>
struct dtype_of<bfloat16_t> {
  static constexpr DType value = DType::bf16;
};

FASTOPT_HD int64_t dtype_size(DType d) {
  return d == DType::f32 ? 4 : d == DType::q8 ? 1 : 2;
}

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::f32: return "float32";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
    case DType::q8: return "8bit";
  }
  return "?";
}

}  // namespace fastopt
