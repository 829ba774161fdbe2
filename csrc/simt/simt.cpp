// The launcher of the host emulation (see simt.h): blocks one after another, the threads of a
// block as fibers on the launching host thread, switched only at barriers and warp operations.
#include "simt.h"

#include <sys/mman.h>
#include <xmmintrin.h>

#include <cstdio>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#if !defined(__x86_64__)
#error "the SIMT emulation's fiber switch is written for x86-64"
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

// Fiber switch (x86-64 System V): saves the callee-saved registers and the SSE/x87 control words
// on the current stack, stores the stack pointer to *save and resumes the stack at load. A new
// fiber's stack is prepared so that its first switch "returns" into fastopt_simt_entry, which
// calls the entry function (r12) with the fiber (rbx). No system call, unlike swapcontext.
extern "C" {
void fastopt_simt_switch(void** save, void* load);
void fastopt_simt_entry();
}
asm(R"(
  .text
  .p2align 4
  .globl fastopt_simt_switch
  .hidden fastopt_simt_switch
  .type fastopt_simt_switch, @function
fastopt_simt_switch:
  .cfi_startproc
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .cfi_endproc
  .size fastopt_simt_switch, .-fastopt_simt_switch

  .p2align 4
  .globl fastopt_simt_entry
  .hidden fastopt_simt_entry
  .type fastopt_simt_entry, @function
fastopt_simt_entry:
  .cfi_startproc
  .cfi_undefined rip
  movq %rbx, %rdi
  call *%r12
  ud2
  .cfi_endproc
  .size fastopt_simt_entry, .-fastopt_simt_entry
)");

namespace simt {
namespace detail {

thread_local Thread* current_thread = nullptr;

namespace {

constexpr size_t kStackBytes = 256 << 10;
constexpr size_t kGuardBytes = 4096;

// A fiber stack with a guard page below it, so an overflow faults instead of corrupting memory.
struct Stack {
  char* base;
  Stack() {
    void* p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("simt: cannot map a fiber stack");
    base = static_cast<char*>(p);
    mprotect(base, kGuardBytes, PROT_NONE);
  }
  ~Stack() { munmap(base, kStackBytes); }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;
  char* top() const { return base + kStackBytes; }
  char* bottom() const { return base + kGuardBytes; }
  static constexpr size_t usable() { return kStackBytes - kGuardBytes; }
};

// AddressSanitizer does not see the fiber switches: without these annotations it takes a fiber's
// frames for the host thread's, and the frames of a fiber that ended (it never returns) stay
// poisoned for the next fiber on that stack, so every report would be suspect. No-ops otherwise.
struct StackSpan {
  const void* bottom = nullptr;
  size_t size = 0;
};

inline void asan_start_switch(void** fake_stack_save, const StackSpan& to) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(fake_stack_save, to.bottom, to.size);
#else
  (void)fake_stack_save, (void)to;
#endif
}

// `from`: where to record the stack switched away from (null: not needed).
inline void asan_finish_switch(void* fake_stack, StackSpan* from) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(fake_stack, from != nullptr ? &from->bottom : nullptr,
                                  from != nullptr ? &from->size : nullptr);
#else
  (void)fake_stack, (void)from;
#endif
}

inline void asan_unpoison(const Stack& stack) {
#if defined(__SANITIZE_ADDRESS__)
  __asan_unpoison_memory_region(stack.bottom(), Stack::usable());
#else
  (void)stack;
#endif
}

enum class State : uint8_t { ready, block_barrier, warp_op, done };

struct Fiber {
  Thread thread;
  void* sp;
  State state;
  StackSpan stack;            // for the sanitizer annotations
  void* fake_stack = nullptr;  // ASan's fake frames of the suspended fiber
};

struct Warp {
  unsigned arrived;  // lanes waiting at the current operation
  unsigned mask;     // the mask of the current operation
  const char* op;
  unsigned phase;  // operations completed; slots alternate so a lane may run one ahead
  uint64_t slots[2][kWarpSize];
};

struct Block {
  BlockInfo info;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  unsigned live = 0;
  unsigned at_barrier = 0;
  void* scheduler_sp = nullptr;
  StackSpan scheduler_stack;  // the host thread's stack, as ASan reports it
  Fiber* running = nullptr;
  Body body = nullptr;
  void* ctx = nullptr;
  std::string error;
};

struct Worker {
  std::vector<std::unique_ptr<Stack>> stacks;
  Block block;
  bool in_launch = false;
};

thread_local Worker worker;
thread_local cudaError_t last_error = cudaSuccess;
thread_local std::string failure;

std::mutex hooks_mutex;
Hooks hooks;

bool named(const char* kernel, const std::vector<std::string>& names) {
  for (const std::string& n : names)
    if (std::strstr(kernel, n.c_str()) != nullptr) return true;
  return false;
}

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void yield(Fiber* f) {
  Block& b = worker.block;
  // a fiber that ended is never resumed: its fake frames can go
  asan_start_switch(f->state == State::done ? nullptr : &f->fake_stack, b.scheduler_stack);
  fastopt_simt_switch(&f->sp, b.scheduler_sp);
  asan_finish_switch(f->fake_stack, &b.scheduler_stack);
}

void fiber_main(Fiber* f) {
  Block& b = worker.block;
  asan_finish_switch(nullptr, &b.scheduler_stack);
  try {
    b.body(b.ctx);
  } catch (const std::exception& e) {
    if (b.error.empty()) b.error = e.what();
  } catch (...) {
    if (b.error.empty()) b.error = "unknown exception in a kernel";
  }
  f->state = State::done;
  --b.live;
  yield(f);
  __builtin_unreachable();
}

void start_fiber(Fiber& f, const Stack& stack) {
  auto* sp = reinterpret_cast<uint64_t*>(stack.top()) - 8;  // the frame fastopt_simt_switch pops
  uint16_t fpcw;
  asm volatile("fnstcw %0" : "=m"(fpcw));
  const uint32_t mxcsr = _mm_getcsr();
  std::memcpy(sp, &mxcsr, 4);
  std::memcpy(reinterpret_cast<char*>(sp) + 4, &fpcw, 2);
  sp[1] = sp[2] = sp[3] = 0;                                // r15 r14 r13
  sp[4] = reinterpret_cast<uint64_t>(&fiber_main);          // r12: entry function
  sp[5] = reinterpret_cast<uint64_t>(&f);                   // rbx: its argument
  sp[6] = 0;                                                // rbp
  sp[7] = reinterpret_cast<uint64_t>(&fastopt_simt_entry);  // return address
  f.sp = sp;
  f.state = State::ready;
  f.stack = StackSpan{stack.bottom(), Stack::usable()};
  f.fake_stack = nullptr;
}

std::string where(const Block& b) {
  const uint3& i = b.info.block_idx;
  return "block (" + std::to_string(i.x) + "," + std::to_string(i.y) + "," + std::to_string(i.z) +
         ")";
}

std::string deadlock(const Block& b) {
  unsigned barrier = 0, warp = 0, done = 0;
  for (const Fiber& f : b.fibers) {
    barrier += f.state == State::block_barrier;
    warp += f.state == State::warp_op;
    done += f.state == State::done;
  }
  std::string msg = "deadlock: " + std::to_string(barrier) + " of " +
                    std::to_string(b.fibers.size()) + " threads wait at __syncthreads(), " +
                    std::to_string(warp) + " at warp operations, " + std::to_string(done) +
                    " have exited";
  for (size_t w = 0; w < b.warps.size(); ++w)
    if (b.warps[w].arrived != 0) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "; warp %zu: lanes 0x%08x of mask 0x%08x at %s", w,
                    b.warps[w].arrived, b.warps[w].mask, b.warps[w].op);
      msg += buf;
    }
  return msg;
}

// Runs the fibers of the block until all have finished; returns an error message or "".
std::string run_block(Block& b) {
  for (;;) {
    bool ran = false;
    for (Fiber& f : b.fibers) {
      if (f.state != State::ready) continue;
      b.running = &f;
      current_thread = &f.thread;
      void* fake_stack = nullptr;
      asan_start_switch(&fake_stack, f.stack);
      fastopt_simt_switch(&b.scheduler_sp, f.sp);
      asan_finish_switch(fake_stack, nullptr);
      ran = true;
      if (!b.error.empty()) return b.error;
    }
    if (b.live == 0) return {};
    if (!ran) return deadlock(b);
  }
}

cudaError_t fail_launch(cudaError_t code, std::string message) {
  last_error = code;
  failure = std::move(message);
  return code;
}

}  // namespace

void fail(const std::string& message) {
  throw Failure(message);
}

void sync_block() {
  Block& b = worker.block;
  Fiber* f = b.running;
  // Strict: every thread of the block, exited ones included, must reach the barrier.
  if (++b.at_barrier == b.fibers.size()) {
    for (Fiber& o : b.fibers)
      if (o.state == State::block_barrier) o.state = State::ready;
    b.at_barrier = 0;
    return;
  }
  f->state = State::block_barrier;
  yield(f);
}

const uint64_t* warp_exchange(unsigned mask, uint64_t value, const char* op) {
  Block& b = worker.block;
  Fiber* f = b.running;
  const unsigned lane = f->thread.linear % kWarpSize;
  Warp& w = b.warps[f->thread.linear / kWarpSize];
  if ((mask >> lane & 1u) == 0)
    fail(std::string(op) + ": lane " + std::to_string(lane) + " is not in its mask");
  if (w.arrived == 0) {
    w.mask = mask;
    w.op = op;
  } else if (w.mask != mask || std::strcmp(w.op, op) != 0) {
    char buf[200];
    std::snprintf(buf, sizeof buf,
                  "divergent warp operations: lane %u calls %s(mask 0x%08x) while lanes 0x%08x "
                  "wait at %s(mask 0x%08x)",
                  lane, op, mask, w.arrived, w.op, w.mask);
    fail(buf);
  }
  const unsigned phase = w.phase;
  w.slots[phase & 1][lane] = value;
  w.arrived |= 1u << lane;
  if (w.arrived == mask) {
    w.arrived = 0;
    ++w.phase;
    const unsigned first = f->thread.linear - lane;
    for (unsigned l = 0; l < kWarpSize; ++l)
      if ((mask >> l & 1u) != 0 && first + l < b.fibers.size() &&
          b.fibers[first + l].state == State::warp_op)
        b.fibers[first + l].state = State::ready;
  } else {
    f->state = State::warp_op;
    yield(f);
  }
  return w.slots[phase & 1];
}

cudaError_t run_grid(const char* name, dim3 grid, dim3 block, Body body, void* ctx) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (threads == 0 || threads > kMaxBlockThreads || block.z > 64 || grid.x == 0 || grid.y == 0 ||
      grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
    return fail_launch(cudaErrorInvalidConfiguration,
                       "grid (" + std::to_string(grid.x) + "," + std::to_string(grid.y) + "," +
                           std::to_string(grid.z) + ") of blocks (" + std::to_string(block.x) +
                           "," + std::to_string(block.y) + "," + std::to_string(block.z) + ")");
  Hooks active;
  {
    std::lock_guard<std::mutex> lock(hooks_mutex);
    active = hooks;
  }
  if (named(name, active.fail))
    return fail_launch(cudaErrorLaunchFailure, "failure injected by a test hook");
  const bool skipping = named(name, active.skip);
  Worker& wk = worker;
  if (wk.in_launch)
    return fail_launch(cudaErrorLaunchFailure, "a kernel launched a kernel (not emulated)");
  while (wk.stacks.size() < threads) wk.stacks.push_back(std::make_unique<Stack>());
  Block& b = wk.block;
  b.info.block_dim = block;
  b.info.grid_dim = grid;
  b.fibers.assign(threads, Fiber{});
  b.warps.assign((threads + kWarpSize - 1) / kWarpSize, Warp{});
  b.body = body;
  b.ctx = ctx;
  wk.in_launch = true;
  std::string error;
  int64_t linear_block = 0;
  for (unsigned z = 0; z < grid.z && error.empty(); ++z)
    for (unsigned y = 0; y < grid.y && error.empty(); ++y)
      for (unsigned x = 0; x < grid.x && error.empty(); ++x, ++linear_block) {
        if (skipping && linear_block < active.skip_below) continue;
        b.info.block_idx = uint3{x, y, z};
        for (Warp& w : b.warps) w.arrived = 0;
        b.live = unsigned(threads);
        b.at_barrier = 0;
        b.error.clear();
        for (unsigned t = 0; t < threads; ++t) {
          Fiber& f = b.fibers[t];
          f.thread.thread_idx = uint3{t % block.x, t / block.x % block.y, t / (block.x * block.y)};
          f.thread.linear = t;
          f.thread.block = &b.info;
          asan_unpoison(*wk.stacks[t]);
          start_fiber(f, *wk.stacks[t]);
        }
        error = run_block(b);
        if (!error.empty()) error = where(b) + ": " + error;
      }
  current_thread = nullptr;
  wk.in_launch = false;
  if (!error.empty()) return fail_launch(cudaErrorLaunchFailure, error);
  return cudaSuccess;
}

void set_hooks(const Hooks& h) {
  std::lock_guard<std::mutex> lock(hooks_mutex);
  hooks = h;
}

}  // namespace detail

const std::string& last_failure() {
  return detail::failure;
}

}  // namespace simt

// ---- runtime API subset -------------------------------------------------------------------------

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = simt::detail::last_error;
  simt::detail::last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() {
  return simt::detail::last_error;
}

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : cudaErrorInvalidDevice;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind,
                            cudaStream_t) {
  if (bytes != 0) std::memcpy(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) {
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t, cudaStreamCaptureStatus* status) {
  *status = cudaStreamCaptureStatusNone;
  return cudaSuccess;
}
