// Precision modes of 16-bit params: how an update's float32 result reaches the param. They are
// properties of the param's load and store, not of the optimizer: the functors never see them,
// and element.h and the engines apply them around every op alike.
#pragma once

#include <cstdint>
#include <type_traits>

#include "dtype.h"

namespace fastopt {

enum class ParamMode : int32_t {
  nearest = 0,  // the param itself, rounded to nearest even (torch's behaviour)
  master = 1,   // aux: a float32 copy that the update reads and writes; the param is its rounding
  kahan = 2,    // aux: a compensation buffer (param dtype) holding what the rounding lost
  stochastic = 3,  // bfloat16 params: rounded up with probability equal to the dropped fraction
};
constexpr int kNumParamModes = 4;

// Group keys of stochastic rounding, read for every op after its own hyperparameters: the
// seed (fixed for a run) and a count the optimizer advances each step, so every step draws new
// bits. Both travel in state_dict()['param_groups'], so a resumed run rounds as the original.
constexpr const char* kRoundingKeys[2] = {"rounding_seed?", "rounding_step?"};

// The param store of one span of a tensor: its mode, its aux buffer at the span's start, and
// the Philox key and counter of its rounding bits.
struct ParamStore {
  ParamMode mode = ParamMode::nearest;
  void* aux = nullptr;
  uint32_t seed = 0, tensor = 0, step = 0;
  int64_t base = 0;  // index in the tensor of the span's first element
};

// The store of the span that starts at element `begin` of a tensor whose mode buffer starts
// at aux (param_bytes: the param's element size; a master copy has 4-byte elements).
FASTOPT_HD ParamStore param_store(ParamMode mode, void* aux, int64_t param_bytes, int64_t begin,
                                  uint32_t seed, uint32_t tensor, uint32_t step) {
  ParamStore ps;
  ps.mode = mode;
  ps.base = begin;
  ps.seed = seed;
  ps.tensor = tensor;
  ps.step = step;
  if (aux != nullptr)
    ps.aux = static_cast<char*>(aux) + begin * (mode == ParamMode::master ? 4 : param_bytes);
  return ps;
}

// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a
// counter-based generator, so each element's bits depend only on (key, counter), never on the
// thread, chunk or engine that computes them.
struct Philox4 {
  uint32_t v[4];
};

FASTOPT_HD Philox4 philox4x32_10(Philox4 c, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    const uint64_t m0 = uint64_t(0xD2511F53u) * c.v[0];
    const uint64_t m1 = uint64_t(0xCD9E8D57u) * c.v[2];
    c = Philox4{{uint32_t(m1 >> 32) ^ c.v[1] ^ k0, uint32_t(m1), uint32_t(m0 >> 32) ^ c.v[3] ^ k1,
                 uint32_t(m0)}};
  }
  return c;
}

// Elements per Philox call: 128 bits, 16 for each element.
constexpr int kRoundingGroup = 8;

FASTOPT_HD Philox4 rounding_block(const ParamStore& ps, int64_t group) {
  const uint64_t g = uint64_t(group);
  return philox4x32_10(Philox4{{uint32_t(g), uint32_t(g >> 32), ps.step, 0u}}, ps.seed, ps.tensor);
}

FASTOPT_HD uint32_t rounding_bits(const Philox4& r, int64_t index) {
  const int lane = int(index & (kRoundingGroup - 1));
  // word lane / 2 by selects: a runtime index into r would put it in (GPU) local memory
  const uint32_t word = lane & 4 ? (lane & 2 ? r.v[3] : r.v[2]) : (lane & 2 ? r.v[1] : r.v[0]);
  return (word >> ((lane & 1) * 16)) & 0xFFFFu;
}

// The 16 random bits of element `index` of the tensor.
FASTOPT_HD uint32_t rounding_bits(const ParamStore& ps, int64_t index) {
  return rounding_bits(rounding_block(ps, index / kRoundingGroup), index);
}

// float -> bfloat16 rounded up (in magnitude) with probability (dropped bits) / 2^16, given 16
// uniform random bits: E[result] = f. NaN -> 0x7fc0 as the nearest rounding; an infinity stays
// one; the largest finite values may round to infinity, as their nearest rounding can.
FASTOPT_HD uint16_t float_to_bfloat16_stochastic(float f, uint32_t random16) {
  return uint16_t(f != f ? 0x7FC0u : (float_bits(f) + random16) >> 16);
}

// The param's value as the update reads it, in mode M.
template <ParamMode M, class P>
FASTOPT_HD float load_param(const ParamStore& ps, const P* p, int64_t i) {
  if constexpr (M == ParamMode::master)
    return static_cast<const float*>(ps.aux)[i];
  else
    return load(p + i);
}

// Kahan-compensated store: the compensation c carries what earlier roundings of the param lost;
// the update's change is added to it, the param takes p0 + c rounded, and c keeps the rest.
template <class P>
FASTOPT_HD void store_compensated(P* p, P* comp, int64_t i, float p0, float pv) {
  const float c = load(comp + i) + (pv - p0);
  store(p + i, p0 + c);
  store(comp + i, c - (load(p + i) - p0));  // p - p0: exact for the nearby 16-bit values
}

// Writes the update's result pv of element i in mode M (p0: the value it was computed from).
template <ParamMode M, class P>
FASTOPT_HD void store_param(const ParamStore& ps, P* p, int64_t i, float p0, float pv) {
  if constexpr (M == ParamMode::master) {
    static_cast<float*>(ps.aux)[i] = pv;
    store(p + i, pv);
  } else if constexpr (M == ParamMode::kahan) {
    store_compensated(p, static_cast<P*>(ps.aux), i, p0, pv);
  } else if constexpr (M == ParamMode::stochastic && std::is_same_v<P, bfloat16_t>) {
    p[i].bits = float_to_bfloat16_stochastic(pv, rounding_bits(ps, ps.base + i));
  } else {
    store(p + i, pv);  // nearest (the plan allows stochastic rounding of bfloat16 params only)
  }
}

// f(std::integral_constant<ParamMode, M>) for the mode M of ps: one code path per mode, with
// no per-element branch and only that mode's live values.
template <class F>
FASTOPT_HD void with_param_mode(ParamMode mode, F&& f) {
  switch (mode) {
    case ParamMode::nearest: f(std::integral_constant<ParamMode, ParamMode::nearest>{}); break;
    case ParamMode::master: f(std::integral_constant<ParamMode, ParamMode::master>{}); break;
    case ParamMode::kahan: f(std::integral_constant<ParamMode, ParamMode::kahan>{}); break;
    case ParamMode::stochastic:
      f(std::integral_constant<ParamMode, ParamMode::stochastic>{});
      break;
  }
}

}  // namespace fastopt
