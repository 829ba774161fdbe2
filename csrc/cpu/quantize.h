// Blockwise 8-bit quantization (core/quant8.h) on the CPU, compiled per instruction set: the
// loops are written so that GCC vectorizes them on every ISA path (a table lookup per value
// becomes a gather; the absmax an integer max), with the same codes as the scalar definitions.
#pragma once

#include <cstdint>

#include "../core/quant8.h"

namespace fastopt {
namespace FASTOPT_CPU_NS {

// The loops take their tables as __restrict parameters, and are not inlined: GCC honours
// restrict on a function's own parameters only, and a uint8_t store may alias anything, so
// without it the gathers would not vectorize.
template <bool kSigned>
__attribute__((noinline)) void encode_span(const uint32_t* __restrict entry,
                                           const float* __restrict x, int n, float inv,
                                           uint8_t* __restrict codes) {
  for (int i = 0; i < n; ++i) codes[i] = quant::EncodeTable<kSigned>::encode(entry, x[i] * inv);
}

template <bool kSigned>
__attribute__((noinline)) void decode_span(const float* __restrict map,
                                           const uint8_t* __restrict codes, int n, float absmax,
                                           float* __restrict x) {
  for (int i = 0; i < n; ++i) x[i] = map[codes[i]] * absmax;
}

// One block of n <= kQuantBlock values: codes and absmax.
template <bool kSigned>
inline void quantize_block(const float* x, int n, uint8_t* codes, float* absmax) {
  // fold_absmax as an integer max of the magnitudes' bits (nonnegative floats, NaN included,
  // order as their bits do); finish_absmax then makes any NaN or inf the same NaN.
  uint32_t bits = 0;
  for (int i = 0; i < n; ++i) {
    const uint32_t mag = float_bits(x[i]) & 0x7fffffffu;
    bits = mag > bits ? mag : bits;
  }
  const float m = quant::finish_absmax(bits_float(bits));
  encode_span<kSigned>(quant::encode_entries(kSigned), x, n, quant::inverse_absmax(m), codes);
  *absmax = m;
}

template <bool kSigned>
inline void dequantize_block(const uint8_t* codes, int n, float absmax, float* x) {
  decode_span<kSigned>(quant::map<kSigned>(), codes, n, absmax, x);
}

// Whole tensors (state-dict conversions): n values, ceil(n / kQuantBlock) absmax.
inline void quantize(const float* x, int64_t n, bool is_signed, uint8_t* codes, float* absmax) {
  for (int64_t b = 0; b < n; b += kQuantBlock) {
    const int len = int(n - b < kQuantBlock ? n - b : kQuantBlock);
    if (is_signed)
      quantize_block<true>(x + b, len, codes + b, absmax + b / kQuantBlock);
    else
      quantize_block<false>(x + b, len, codes + b, absmax + b / kQuantBlock);
  }
}

inline void dequantize(const uint8_t* codes, const float* absmax, int64_t n, bool is_signed,
                       float* x) {
  for (int64_t b = 0; b < n; b += kQuantBlock) {
    const int len = int(n - b < kQuantBlock ? n - b : kQuantBlock);
    if (is_signed)
      dequantize_block<true>(codes + b, len, absmax[b / kQuantBlock], x + b);
    else
      dequantize_block<false>(codes + b, len, absmax[b / kQuantBlock], x + b);
  }
}

}  // namespace FASTOPT_CPU_NS
}  // namespace fastopt
