// The op list: the one place that names the ops the engines run (the optimizers, and the
// averaging of averaged models, ema.h). The CPU engine, the CUDA engine (one generated source
// per op, see CMakeLists.txt, which reads this list), the host emulation, the plan and the
// catalog that fastopt._C exports are all expanded from it.
//
// An op is a struct of host+device code (see sgd.h for the smallest one) that must provide:
//   kName, kStates, kStateKeys[kStates] (torch's state names in engine order), kHasStep (the
//   engine counts a per-param float32 'step' state), kReductions (a mask of Reduction),
//   enum Hyper {..., kLr, ..., kNumHyper} with kHyperKeys[kNumHyper] (group keys; "key.N" is
//   item N, a trailing '?' optional, '!' structural), Variants (an integer_sequence of the
//   compile-time variants) with states_used(v) (a mask of the states variant v reads and
//   writes), kUnsignedStates (a mask of the states that are never negative: 8-bit states
//   quantize them with the unsigned map, quant8.h), Args (prepared per tensor, with an int
//   `variant`), and
//     static Args prepare(const double* hyper, double step, int fresh);
//     template <int V> static void update(const Args&, float& p, float g, float* s);
//   and, with reductions, static void adapt(Args&, const TensorNorms&) (after the reduction
//   pass), and with kDirectionNorm
//     template <int V> static float direction(const Args&, float p, float g, const float* s);
// check_op<Op>() states the contract as static_asserts with readable messages.
#pragma once

#include <type_traits>
#include <utility>

#include "adagrad.h"
#include "adam.h"
#include "adan.h"
#include "ema.h"
#include "lamb.h"
#include "lars.h"
#include "lion.h"
#include "rmsprop.h"
#include "sgd.h"
#include "table.h"

// X(Struct, name): name must equal Struct::kName (checked below). CMakeLists.txt parses these
// lines: keep one entry per line.
#define FASTOPT_OPS(X) \
  X(Sgd, sgd)          \
  X(Adam, adam)        \
  X(Lars, lars)        \
  X(Adagrad, adagrad)  \
  X(Rmsprop, rmsprop)  \
  X(Lion, lion)        \
  X(Adan, adan)        \
  X(Lamb, lamb)        \
  X(Ema, ema)

namespace fastopt {

namespace detail {

template <class Op, class = void>
struct has_adapt : std::false_type {};
template <class Op>
struct has_adapt<Op, std::void_t<decltype(Op::adapt(std::declval<typename Op::Args&>(),
                                                    std::declval<const TensorNorms&>()))>>
    : std::true_type {};

template <class Op, class = void>
struct has_direction : std::false_type {};
template <class Op>
struct has_direction<Op, std::void_t<decltype(Op::template direction<0>(
                             std::declval<const typename Op::Args&>(), 0.f, 0.f,
                             static_cast<const float*>(nullptr)))>> : std::true_type {};

template <class Op, class = void>
struct has_prepare : std::false_type {};
template <class Op>
struct has_prepare<Op,
                   std::void_t<decltype(Op::prepare(static_cast<const double*>(nullptr), 0.0, 0))>>
    : std::is_same<decltype(Op::prepare(static_cast<const double*>(nullptr), 0.0, 0)),
                   typename Op::Args> {};

template <class Op, class = void>
struct has_variant : std::false_type {};
template <class Op>
struct has_variant<Op, std::void_t<decltype(std::declval<typename Op::Args&>().variant)>>
    : std::is_same<decltype(std::declval<typename Op::Args&>().variant), int> {};

constexpr bool same_name(const char* a, const char* b) {
  return *a == *b && (*a == '\0' || same_name(a + 1, b + 1));
}

}  // namespace detail

template <class Op>
constexpr bool check_op() {
  static_assert(Op::kStates >= 1 && Op::kStates <= kMaxStates,
                "an op keeps 1..kMaxStates state buffers (raise kMaxStates in table.h)");
  static_assert(sizeof(Op::kStateKeys) / sizeof(Op::kStateKeys[0]) == size_t(Op::kStates),
                "kStateKeys must name each of the op's kStates states");
  static_assert(sizeof(Op::kHyperKeys) / sizeof(Op::kHyperKeys[0]) == size_t(Op::kNumHyper),
                "kHyperKeys must name each Hyper index up to kNumHyper");
  static_assert(int(Op::kLr) == 0,
                "the first hyperparameter must be kLr ('lr'; a device lr "
                "replaces it)");
  static_assert(detail::same_name(Op::kHyperKeys[0], "lr"), "kHyperKeys[kLr] must be \"lr\"");
  static_assert(std::is_trivially_copyable<typename Op::Args>::value,
                "Args travels in kernel workspaces: it must be trivially copyable");
  static_assert((Op::kUnsignedStates >> Op::kStates) == 0,
                "kUnsignedStates is a mask of the op's states");
  static_assert(detail::has_variant<Op>::value, "Args needs an `int variant` member");
  static_assert(detail::has_prepare<Op>::value,
                "prepare(const double* hyper, double step, int fresh) must return Args");
  static_assert((Op::kReductions & ~unsigned(kParamNorm | kGradNorm | kDirectionNorm)) == 0,
                "kReductions is a mask of Reduction values");
  static_assert(Op::kReductions == 0 || detail::has_adapt<Op>::value,
                "an op with reductions needs adapt(Args&, const TensorNorms&)");
  static_assert(!(Op::kReductions & kDirectionNorm) || detail::has_direction<Op>::value,
                "kDirectionNorm needs template <int V> float direction(const Args&, float p, "
                "float g, const float* s)");
  return true;
}

#define FASTOPT_CHECK_OP(Struct, name)                   \
  static_assert(check_op<Struct>(), "");                 \
  static_assert(detail::same_name(Struct::kName, #name), \
                "op list: " #name " must be " #Struct "::kName");
FASTOPT_OPS(FASTOPT_CHECK_OP)
#undef FASTOPT_CHECK_OP

// Op ids: positions in the list.
enum class OpId : int {
#define FASTOPT_OP_ID(Struct, name) name,
  FASTOPT_OPS(FASTOPT_OP_ID)
#undef FASTOPT_OP_ID
      count
};
constexpr int kNumOps = int(OpId::count);

// Calls f(Struct{}, id) for the op named `name`; false when no op has that name.
template <class F>
bool with_op(const char* name, F&& f) {
#define FASTOPT_WITH_OP(Struct, n)              \
  if (detail::same_name(name, Struct::kName)) { \
    f(Struct{}, OpId::n);                       \
    return true;                                \
  }
  FASTOPT_OPS(FASTOPT_WITH_OP)
#undef FASTOPT_WITH_OP
  return false;
}

}  // namespace fastopt
