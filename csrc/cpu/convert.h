// Block conversions between the 16-bit element types and float32 for the CPU engine's staged
// loops, compiled per instruction set (the __AVX512F__ / __F16C__ / __AVX512BF16__ macros come
// from the flags of each engine_<isa>.cpp).
//
// Every path returns the bits of the scalar conversions in core/dtype.h (which match c10::Half
// and c10::BFloat16), including NaN and subnormal inputs. The instructions differ from them in
// two places, both fixed up lane by lane (checked over all 2^32 inputs when this was written,
// and by tests/test_engine.py's special values on every ISA):
// - vcvtps2ph keeps a NaN's payload (0x7f802000 -> 0x7e01); torch writes sign | 0x7e00.
// - vcvtneps2bf16 flushes subnormal inputs to zero and keeps a NaN's payload and sign; torch
//   rounds subnormals like any value and writes 0x7fc0 for every NaN.
// vcvtph2ps is exact on all 65536 inputs, and none of the three reads MXCSR's DAZ/FTZ.
#pragma once

#include <cstdint>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../core/dtype.h"

namespace fastopt {
namespace FASTOPT_CPU_NS {

// Types the update loop converts in blocks with the ISA's instructions (elsewhere the scalar
// conversions of core/dtype.h vectorize well: bf16 is integer shifts and adds).
template <class T>
constexpr bool kConverted = false;
#if defined(__F16C__) || defined(__AVX512F__)
template <>
constexpr bool kConverted<half_t> = true;
#endif
#if defined(__AVX512BF16__)
template <>
constexpr bool kConverted<bfloat16_t> = true;
#endif

// Elements per staged block: one vector register of float32.
#if defined(__AVX512F__)
constexpr int kBlock = 16;
#else
constexpr int kBlock = 8;
#endif

inline void to_float(const bfloat16_t* src, float* dst, int n) {
  for (int i = 0; i < n; ++i) dst[i] = load(src + i);  // a shift: vectorizes as is
}

inline void to_float(const half_t* src, float* dst, int n) {
  int i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(
        dst + i, _mm512_maskz_cvtph_ps(
                     __mmask16(-1), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
#elif defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#endif
  for (; i < n; ++i) dst[i] = load(src + i);
}

inline void from_float(const float* src, half_t* dst, int n) {
  int i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    const __m512 x = _mm512_loadu_ps(src + i);
    __m256i h =
        _mm512_maskz_cvtps_ph(__mmask16(-1), x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    const __m256i canonical =
        _mm256_or_si256(_mm256_and_si256(h, _mm256_set1_epi16(-0x8000)), _mm256_set1_epi16(0x7E00));
    h = _mm256_mask_mov_epi16(h, nan, canonical);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), h);
  }
#elif defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(src + i);
    __m128i h = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256i nan32 = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    const __m128i nan =
        _mm_packs_epi32(_mm256_castsi256_si128(nan32), _mm256_extracti128_si256(nan32, 1));
    h = _mm_blendv_epi8(
        h, _mm_or_si128(_mm_and_si128(h, _mm_set1_epi16(-0x8000)), _mm_set1_epi16(0x7E00)), nan);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
#endif
  for (; i < n; ++i) store(dst + i, src[i]);
}

inline void from_float(const float* src, bfloat16_t* dst, int n) {
  int i = 0;
#if defined(__AVX512BF16__)
  for (; i + 16 <= n; i += 16) {
    const __m512 x = _mm512_loadu_ps(src + i);
    // NaN (quiet 0x01, signalling 0x80) or subnormal (0x20): rare, so one test per block
    if (_mm512_fpclass_ps_mask(x, 0xA1) != 0) {
      for (int l = 0; l < 16; ++l) store(dst + i + l, src[i + l]);
      continue;
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(x)));
  }
#endif
  for (; i < n; ++i) store(dst + i, src[i]);  // integer rounding: vectorizes as is
}

}  // namespace FASTOPT_CPU_NS
}  // namespace fastopt
