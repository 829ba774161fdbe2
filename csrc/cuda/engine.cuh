// The CUDA engine: per step, the launch plans of the gradient pipeline, the norms an optimizer
// needs, the per-tensor preparation and the update, all on torch's current stream, with no
// host synchronisation and no host-to-device copy (everything per step travels in kernel
// parameters). Instantiated once per optimizer (engine_<op>.cu), so they compile in parallel.
#pragma once

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../engine.h"
#include "api.h"
#include "kernels.cuh"

namespace fastopt {
namespace cuda {

// Launch limits of one plan, resolved against the defaults (see LaunchLimits).
struct Limits {
  int64_t max_tensors;  // 0: as many as a launch holds
  int64_t max_blocks;
  int64_t chunk_elems;
};
Limits resolve_limits(int64_t chunk_elems);

// The launch variants of one plan (see Variants): bounds indexes kUpdateBounds.
struct ResolvedVariants {
  int bounds;
  bool tiered;
  int64_t combine_segment;
};
ResolvedVariants resolve_variants();

// Makes the launches of a step, or records them without launching (Engine::launches).
class Launcher {
 public:
  Launcher(cudaStream_t stream, std::vector<LaunchRecord>* records)
      : stream_(stream), records_(records) {}
  bool recording() const { return records_ != nullptr; }

  template <class Name, class... P, class... A>
  void operator()(Name&& name, LaunchRecord info, void (*kernel)(P...), dim3 grid, dim3 block,
                  const A&... args) {
    if (records_ != nullptr) {
      info.kernel = name();
      info.blocks = int64_t(grid.x) * grid.y * grid.z;
      info.threads = int64_t(block.x) * block.y * block.z;
      info.param_bytes = int64_t((sizeof(A) + ...));
      records_->push_back(std::move(info));
      return;
    }
    launch(name, kernel, grid, block, stream_, args...);
  }

 private:
  cudaStream_t stream_;
  std::vector<LaunchRecord>* records_;
};

void launch_pipeline(const PipelineArgs& args, Launcher& launcher);  // common.cu
void launch_combine_partials(const double* partials, int64_t n, int64_t segment,
                             const NormMeasure& m, double* out, Launcher& launcher);

// f(std::integral_constant<int, I>) for the runtime index i < kNumUpdateBounds.
template <class F, size_t... I>
void with_bounds_index(int i, F&& f, std::index_sequence<I...>) {
  ((i == int(I) ? f(std::integral_constant<int, int(I)>{}) : void()), ...);
}

template <class T>
struct Tag {
  using type = T;
};

template <class F>
void with_dtype(DType d, F&& f) {
  switch (d) {
    case DType::f32: f(Tag<float>{}); break;
    case DType::f16: f(Tag<half_t>{}); break;
    case DType::bf16: f(Tag<bfloat16_t>{}); break;
    case DType::q8: break;  // never a param's or a grad's type (quant_launches)
  }
}

// f(Tag<P>, Tag<G>, Tag<S>) for an entry's types: grads and states are float32 or the param's.
template <class F>
void with_types(DType p, DType g, DType s, F&& f) {
  with_dtype(p, [&](auto pt) {
    using P = typename decltype(pt)::type;
    auto with_state = [&](auto gt) {
      if (s == DType::f32)
        f(pt, gt, Tag<float>{});
      else
        f(pt, gt, Tag<P>{});
    };
    if (g == DType::f32)
      with_state(Tag<float>{});
    else
      with_state(Tag<P>{});
  });
}

template <class T>
const char* type_name() {
  return dtype_name(dtype_of<T>::value);
}

template <class Op>
class CudaEngine final : public Engine {
  using Args = typename Op::Args;
  static constexpr int kStates = Op::kStates;
  static constexpr int kUpdateN = kUpdateTensors<kStates>;
  static constexpr int kPrepareN = kPrepareTensors<Op::kNumHyper>;
  using Update = UpdateLaunch<kUpdateN, kStates>;
  static constexpr int kQuantN = kQuantUpdateTensors<kStates>;
  using QuantUpdate = QuantUpdateLaunch<kQuantN, kStates>;
  using Norm = NormLaunch<kNormTensors>;
  using Prepare = PrepareLaunch<kPrepareN, Op::kNumHyper>;
  using Combine = CombineLaunch<kCombineTensors>;
  static_assert(sizeof(Update) <= kStructBytes && sizeof(QuantUpdate) <= kStructBytes &&
                    sizeof(Norm) <= kStructBytes && sizeof(Prepare) <= kStructBytes &&
                    sizeof(Combine) <= kStructBytes,
                "launch parameters exceed the kernel parameter space");

 public:
  CudaEngine(const std::vector<TensorEntry>& entries, int device, int64_t chunk_elems)
      : device_(device), limits_(resolve_limits(chunk_elems)), variants_(resolve_variants()) {
    const int64_t n = int64_t(entries.size());
    if (n > 0x7fffffff) throw std::invalid_argument("too many tensors for one plan");
    for (const TensorEntry& e : entries) {
      if (e.state_dtype == DType::q8 && limits_.chunk_elems % kQuantBlock != 0)
        throw std::invalid_argument("8-bit states need chunks of a multiple of " +
                                    std::to_string(kQuantBlock) + " elements (their blocks)");
      const int64_t chunks = (e.numel + limits_.chunk_elems - 1) / limits_.chunk_elems;
      if (chunks > kMaxGridBlocks)
        throw std::invalid_argument("a tensor of " + std::to_string(e.numel) +
                                    " elements needs more than 2^31 - 1 chunks");
      chunks_.push_back(chunks);
      total_chunks_ += chunks;
      fresh_.push_back(e.fresh);
    }
    if (total_chunks_ > 0x7fffffff) throw std::invalid_argument("too many chunks for one plan");
    chunk_base_.assign(size_t(n), 0);
    // workspace: prepared args | first-step flags | chunk partials (one row per Reduction; row
    // 0 also serves the pipeline and tensor_norms) | pipeline | tensor norms
    auto region = [&](int64_t bytes) {
      const int64_t at = workspace_bytes_;
      workspace_bytes_ += (bytes + 15) / 16 * 16;
      return at;
    };
    args_at_ = region(n * int64_t(sizeof(Args)));
    fresh_at_ = region(n * 4);
    partials_at_ = region(kNumReductions * total_chunks_ * 8);
    pipeline_at_ = region(sizeof(PipelineState));
    norms_at_ = region(n * 8);
    if (variants_.combine_segment > 0)  // the two-level combine's first-level results
      level2_at_ =
          region((total_chunks_ + variants_.combine_segment - 1) / variants_.combine_segment * 8);
    update_ = std::make_unique<Update>();
    quant_update_ = std::make_unique<QuantUpdate>();
    norm_ = std::make_unique<Norm>();
    prepare_ = std::make_unique<Prepare>();
    combine_ = std::make_unique<Combine>();
  }

  const char* backend() const override { return kBackend; }
  int64_t num_chunks() const override { return total_chunks_; }
  int64_t workspace_bytes() const override { return workspace_bytes_; }

  void bind_workspace(void* ptr, void* stream) override {
    if (!aligned16(ptr)) throw std::invalid_argument("the workspace must be 16-byte aligned");
    workspace_ = static_cast<char*>(ptr);
    DeviceGuard guard(device_);
    if (!fresh_.empty())  // the only upload: when the plan is built
      check(cudaMemcpyAsync(fresh(), fresh_.data(), fresh_.size() * 4, cudaMemcpyHostToDevice,
                            static_cast<cudaStream_t>(stream)),
            "uploading first-step flags");
  }

  void step(const StepInputs& in, const GradPipeline& pipe) override {
    require_workspace();
    DeviceGuard guard(device_);
    Launcher launcher(static_cast<cudaStream_t>(in.stream), nullptr);
    run(in, pipe, launcher);
  }

  std::vector<LaunchRecord> launches(const StepInputs& in, const GradPipeline& pipe) override {
    std::vector<LaunchRecord> records;
    Launcher launcher(nullptr, &records);
    run(in, pipe, launcher);
    return records;
  }

  std::vector<double> tensor_norms(const StepInputs& in, int which, NormMeasure m,
                                   float scale) override {
    require_workspace();
    DeviceGuard guard(device_);
    const auto stream = static_cast<cudaStream_t>(in.stream);
    Launcher launcher(stream, nullptr);
    collect_active(in);
    norms(in, launcher, which, ScaleSource{scale, nullptr, nullptr}, m, partials(0));
    Combine& c = *combine_;
    pack(
        nonempty_, capacity(kCombineTensors), nullptr,
        [&](int i, int64_t e) {
          c.chunk_base[i] = chunk_base_[e];
          c.chunks[i] = int32_t(chunks_[e]);
          c.out[i] = int32_t(e);
          c.tensor_id[i] = in.entries[e].tensor_id;
        },
        [&](int count, int64_t) {
          c.n = count;
          with_capacity<kCombineTensors>(count, [&](auto cap) {
            constexpr int M = decltype(cap)::value;
            launcher([] { return std::string("combine"); }, LaunchRecord{}, &combine_kernel<M>,
                     dim3(unsigned(count)), dim3(kTensorThreads), sized<M, kCombineTensors>(c),
                     static_cast<const double*>(partials(0)), m, tensor_norms_out());
          });
        });
    std::vector<double> out(chunks_.size(), 0.0);
    if (!out.empty()) {
      check(cudaMemcpyAsync(out.data(), tensor_norms_out(), out.size() * 8, cudaMemcpyDeviceToHost,
                            stream),
            "copying tensor norms");
      check(cudaStreamSynchronize(stream), "waiting for tensor norms");
    }
    std::vector<double> result(out.size(), 0.0);
    for (int64_t e : nonempty_) result[size_t(e)] = out[size_t(e)];
    return result;
  }

 private:
  void require_workspace() const {
    if (workspace_ == nullptr && workspace_bytes_ > 0)
      throw std::logic_error("CUDA engine: bind_workspace() before the first step");
  }
  Args* args() const { return reinterpret_cast<Args*>(workspace_ + args_at_); }
  int32_t* fresh() const { return reinterpret_cast<int32_t*>(workspace_ + fresh_at_); }
  double* partials(int k) const {
    return reinterpret_cast<double*>(workspace_ + partials_at_) + k * total_chunks_;
  }
  PipelineState* pipeline_state() const {
    return reinterpret_cast<PipelineState*>(workspace_ + pipeline_at_);
  }
  double* tensor_norms_out() const { return reinterpret_cast<double*>(workspace_ + norms_at_); }
  double* level2() const { return reinterpret_cast<double*>(workspace_ + level2_at_); }

  // go(std::integral_constant<int, M>) with M the capacity a launch of `count` tensors uses: the
  // smallest compiled tier that holds them when tables are tiered, else the full N.
  template <int N, int T = kTiers - 1, class Go>
  void with_capacity(int count, Go&& go) const {
    if constexpr (T == 0) {
      go(std::integral_constant<int, N>{});
    } else {
      constexpr int M = tier_capacity(N, T);
      if constexpr (M < N) {
        if (variants_.tiered && count <= M) return go(std::integral_constant<int, M>{});
      }
      with_capacity<N, T - 1>(count, go);
    }
  }
  int64_t capacity(int64_t compiled) const {
    return limits_.max_tensors > 0 ? std::min(limits_.max_tensors, compiled) : compiled;
  }

  // The step's active entries (in table order; those with elements in nonempty_) and their
  // chunks' positions among the step's chunks.
  int64_t collect_active(const StepInputs& in) {
    active_.clear();
    nonempty_.clear();
    int64_t chunks = 0;
    for (int64_t e = 0; e < in.n_entries; ++e) {
      if (!in.entries[e].active) continue;
      active_.push_back(e);
      chunk_base_[size_t(e)] = int32_t(chunks);
      if (chunks_[size_t(e)] > 0) nonempty_.push_back(e);
      chunks += chunks_[size_t(e)];
    }
    return chunks;
  }

  // Packs entries into launches of at most `cap` tensors and max_blocks blocks (a tensor is
  // never split): fill(i, e) makes entry e tensor i of the launch, go(count, blocks) launches.
  // With block_start, the launch is a chunk grid and block_start receives its prefix.
  template <class Fill, class Go>
  void pack(const std::vector<int64_t>& list, int64_t cap, int32_t* block_start, Fill&& fill,
            Go&& go) {
    int count = 0;
    int64_t blocks = 0;
    auto flush = [&] {
      if (block_start != nullptr) block_start[count] = int32_t(blocks);
      go(count, blocks);
      count = 0;
      blocks = 0;
    };
    for (int64_t e : list) {
      const int64_t c = block_start != nullptr ? chunks_[size_t(e)] : 0;
      if (count > 0 && (count == cap || blocks + c > limits_.max_blocks)) flush();
      if (block_start != nullptr) block_start[count] = int32_t(blocks);
      fill(count, e);
      blocks += c;
      ++count;
    }
    if (count > 0) flush();
  }

  template <class T>
  void count_paths(LaunchRecord& info, const void* base, int64_t chunks) const {
    for (int64_t k = 0; k < chunks; ++k) {
      const T* x = static_cast<const T*>(base) + k * limits_.chunk_elems;
      (aligned16(x) ? info.vector_chunks : info.scalar_chunks) += 1;
    }
  }

  // Chunk partials of a norm measure of params (which 0) or grads (which 1), one launch plan
  // per element type.
  void norms(const StepInputs& in, Launcher& launcher, int which, ScaleSource scale, NormMeasure m,
             double* out) {
    for (DType d : {DType::f32, DType::f16, DType::bf16}) {
      list_.clear();
      for (int64_t e : nonempty_) {
        const TensorEntry& t = in.entries[e];
        if ((which == 0 ? param_values_dtype(t) : t.grad_dtype) == d) list_.push_back(e);
      }
      if (list_.empty()) continue;
      with_dtype(d, [&](auto tag) {
        using T = typename decltype(tag)::type;
        Norm& L = *norm_;
        L.grid.chunk_elems = int32_t(limits_.chunk_elems);
        L.measure = m;
        L.scale = scale;
        L.partials = out;
        pack(
            list_, capacity(kNormTensors), L.grid.block_start,
            [&](int i, int64_t e) {
              const TensorEntry& t = in.entries[e];
              L.x[i] = which == 0 ? param_values(t) : t.grad;
              L.grid.numel[i] = t.numel;
              L.grid.chunk_base[i] = chunk_base_[size_t(e)];
            },
            [&](int count, int64_t blocks) {
              L.grid.n = count;
              LaunchRecord info;
              info.tensors = count;
              if (launcher.recording())
                for (int i = 0; i < count; ++i)
                  count_paths<T>(info, L.x[i], L.grid.block_start[i + 1] - L.grid.block_start[i]);
              with_capacity<kNormTensors>(count, [&](auto cap) {
                constexpr int M = decltype(cap)::value;
                launcher(
                    [&] {
                      return std::string(which == 0 ? "param_norms<" : "grad_norms<") +
                             type_name<T>() + ">";
                    },
                    info, &norm_partials_kernel<T, M>, dim3(unsigned(blocks)), dim3(kBlockThreads),
                    sized<M, kNormTensors>(L));
              });
            });
      });
    }
  }

  void prepare(const StepInputs& in, Launcher& launcher, const PipelineState* pipe, bool commit) {
    Prepare& L = *prepare_;
    row_of_group_.assign(size_t(in.n_groups), -1);
    std::vector<int32_t> used;  // groups with a row in the launch being filled
    pack(
        active_, capacity(kPrepareN), nullptr,
        [&](int i, int64_t e) {
          const TensorEntry& t = in.entries[e];
          int32_t& row = row_of_group_[size_t(t.group)];
          if (row < 0) {
            row = int32_t(used.size());
            used.push_back(t.group);
            std::copy_n(in.hyper + int64_t(t.group) * in.hyper_stride, Op::kNumHyper, L.hyper[row]);
            L.lr[row] = in.lr_device != nullptr ? in.lr_device[t.group] : nullptr;
          }
          L.row[i] = row;
          L.slot[i] = int32_t(e);
          L.step[i] = t.step;
        },
        [&](int count, int64_t) {
          L.n = count;
          for (int32_t g : used) row_of_group_[size_t(g)] = -1;
          used.clear();
          LaunchRecord info;
          info.tensors = count;
          with_capacity<kPrepareN>(count, [&](auto cap) {
            constexpr int M = decltype(cap)::value;
            launcher([] { return std::string("prepare<") + Op::kName + ">"; }, info,
                     &prepare_kernel<Op, M>,
                     dim3(unsigned((count + kPrepareThreads - 1) / kPrepareThreads)),
                     dim3(kPrepareThreads), sized<M, kPrepareN>(L), args(), fresh(), pipe,
                     int32_t(commit));
          });
        });
  }

  // The op's per-tensor reductions (partials(k) for Reduction 1 << k), then adapt().
  // With sums_in (every process's sums, GradPipeline::tensor_in) no partials are reduced; with
  // sums_out the sums are reported there and nothing is adapted.
  void reduce_and_adapt(const StepInputs& in, Launcher& launcher, const PipelineState* state,
                        double* sums_out, const double* sums_in) {
    const NormMeasure l2{NormType::l2, 2.0};
    const bool local = sums_in == nullptr;
    if (local && (Op::kReductions & kParamNorm))
      norms(in, launcher, 0, ScaleSource{1.f, nullptr, nullptr}, l2, partials(0));
    if (local && (Op::kReductions & kGradNorm))
      norms(in, launcher, 1, ScaleSource{1.f, nullptr, state}, l2, partials(1));
    if constexpr ((Op::kReductions & kDirectionNorm) != 0)
      if (local)
        for_type_lists<true>(
            in, [&](auto p, auto g, auto s, auto, const std::vector<int64_t>& list) {
              chunk_launches<typename decltype(p)::type, typename decltype(g)::type,
                             typename decltype(s)::type, true, false>(in, launcher, list, state);
            });
    if constexpr ((Op::kReductions & kDirectionNorm) != 0)
      if (local) quant_launches<true>(in, launcher, state);
    Combine& c = *combine_;
    pack(
        active_, capacity(kCombineTensors), nullptr,
        [&](int i, int64_t e) {
          c.chunk_base[i] = chunk_base_[size_t(e)];
          c.chunks[i] = int32_t(chunks_[size_t(e)]);
          c.out[i] = int32_t(e);
          c.tensor_id[i] = in.entries[e].tensor_id;
        },
        [&](int count, int64_t) {
          c.n = count;
          LaunchRecord info;
          info.tensors = count;
          with_capacity<kCombineTensors>(count, [&](auto cap) {
            constexpr int M = decltype(cap)::value;
            launcher([] { return std::string("adapt<") + Op::kName + ">"; }, info,
                     &adapt_kernel<Op, M>, dim3(unsigned(count)), dim3(kTensorThreads),
                     sized<M, kCombineTensors>(c), args(), static_cast<const double*>(partials(0)),
                     total_chunks_, state, sums_out, sums_in);
          });
        });
  }

  // f(Tag<P>, Tag<G>, Tag<S>, kStored, entries) for each combination of element types and param
  // stores (usually one). kValues (the reduction pass): P is the type of the values the update
  // reads (float32 for a master copy); else kStored: the entries' param mode is not nearest
  // (they run in kernels of their own, whose few live registers leave room for the rounding).
  template <bool kValues, class F>
  void for_type_lists(const StepInputs& in, F&& f) {
    std::vector<int64_t> by_types[2 * 27];
    auto special = [](const TensorEntry& t) {
      return kValues ? t.param_mode == ParamMode::master : t.param_mode != ParamMode::nearest;
    };
    for (int64_t e : nonempty_) {
      const TensorEntry& t = in.entries[e];
      if (t.state_dtype == DType::q8) continue;  // quant_launches
      by_types[int(special(t)) * 27 + int(t.param_dtype) * 9 + int(t.grad_dtype) * 3 +
               int(t.state_dtype)]
          .push_back(e);
    }
    for (const std::vector<int64_t>& list : by_types) {
      if (list.empty()) continue;
      const TensorEntry& t = in.entries[list.front()];
      with_types(t.param_dtype, t.grad_dtype, t.state_dtype, [&](auto p, auto g, auto s) {
        using P = typename decltype(p)::type;
        if (!special(t))
          f(p, g, s, std::false_type{}, list);
        else if constexpr (kValues)
          f(Tag<float>{}, g, s, std::false_type{}, list);
        else if constexpr (!std::is_same_v<P, float>)  // 16-bit params only (plan.cpp)
          f(p, g, s, std::true_type{}, list);
      });
    }
  }

  // The chunk-grid launches over params, grads and states: the update, or (direction) the
  // partials of the op's direction norm into partials(2).
  template <class P, class G, class S, bool kDirection, bool kStored>
  void chunk_launches(const StepInputs& in, Launcher& launcher, const std::vector<int64_t>& list,
                      const PipelineState* pipe) {
    Update& L = *update_;
    L.grid.chunk_elems = int32_t(limits_.chunk_elems);
    pack(
        list, capacity(kUpdateN), L.grid.block_start,
        [&](int i, int64_t e) {
          const TensorEntry& t = in.entries[e];
          // the direction reads the values the update reads (a master copy: float32)
          L.param[i] = kDirection ? const_cast<void*>(param_values(t)) : t.param;
          L.grad[i] = t.grad;
          for (int k = 0; k < kStates; ++k) L.state[k][i] = t.state[k];
          if constexpr (!kDirection) {
            const double* rounding = in.hyper + int64_t(t.group) * in.hyper_stride + Op::kNumHyper;
            L.store[i] = ParamSlot{t.aux, t.param_mode, uint32_t(rounding[0]), t.tensor_id,
                                   uint32_t(rounding[1])};
          }
          L.grid.numel[i] = t.numel;
          L.grid.chunk_base[i] = chunk_base_[size_t(e)];
          L.slot[i] = int32_t(e);
        },
        [&](int count, int64_t blocks) {
          L.grid.n = count;
          LaunchRecord info;
          info.tensors = count;
          if (launcher.recording())
            for (int i = 0; i < count; ++i)
              for (int64_t b = L.grid.block_start[i]; b < L.grid.block_start[i + 1]; ++b) {
                const int64_t at = (b - L.grid.block_start[i]) * limits_.chunk_elems;
                auto st = [&](int k) -> const void* {
                  return k < kStates && L.state[k][i] != nullptr
                             ? static_cast<const S*>(L.state[k][i]) + at
                             : nullptr;
                };
                const bool vec = chunk_vectorizable(static_cast<const P*>(L.param[i]) + at,
                                                    static_cast<const G*>(L.grad[i]) + at, st(0),
                                                    st(1), st(2), st(3));
                (vec ? info.vector_chunks : info.scalar_chunks) += 1;
              }
          auto name = [] {
            return std::string(kDirection ? "direction_norms<"
                               : kStored  ? "update_stored<"
                                          : "update<") +
                   Op::kName + ", " + type_name<P>() + ", " + type_name<G>() + ", " +
                   type_name<S>() + ">";
          };
          if constexpr (kDirection) {
            with_capacity<kUpdateN>(count, [&](auto cap) {
              constexpr int M = decltype(cap)::value;
              launcher(name, info, &direction_partials_kernel<Op, P, G, S, M>,
                       dim3(unsigned(blocks)), dim3(kBlockThreads), sized<M, kUpdateN>(L),
                       static_cast<const Args*>(args()), pipe, partials(2));
            });
          } else if (variants_.bounds != 0) {  // the full table, other block sizes or bounds
            with_bounds_index(
                variants_.bounds,
                [&](auto index) {
                  constexpr Bounds b = kUpdateBounds[decltype(index)::value];
                  launcher(name, info,
                           &update_kernel<Op, P, G, S, kUpdateN, kStored, b.threads, b.min_blocks>,
                           dim3(unsigned(blocks)), dim3(unsigned(b.threads)), L,
                           static_cast<const Args*>(args()), pipe);
                },
                std::make_index_sequence<size_t(kNumUpdateBounds)>{});
          } else {
            with_capacity<kUpdateN>(count, [&](auto cap) {
              constexpr int M = decltype(cap)::value;
              launcher(name, info, &update_kernel<Op, P, G, S, M, kStored>, dim3(unsigned(blocks)),
                       dim3(kBlockThreads), sized<M, kUpdateN>(L), static_cast<const Args*>(args()),
                       pipe);
            });
          }
        });
  }

  // The update of the entries with 8-bit states (kDirection: the partials of the op's direction
  // norm into partials(2)): one chunk-grid launch plan per param and grad type, every param mode
  // in the same kernel.
  template <bool kDirection = false>
  void quant_launches(const StepInputs& in, Launcher& launcher, const PipelineState* pipe) {
    std::vector<int64_t> by_types[9];
    for (int64_t e : nonempty_) {
      const TensorEntry& t = in.entries[e];
      if (t.state_dtype == DType::q8)
        by_types[int(t.param_dtype) * 3 + int(t.grad_dtype)].push_back(e);
    }
    for (const std::vector<int64_t>& list : by_types) {
      if (list.empty()) continue;
      const TensorEntry& first = in.entries[list.front()];
      with_types(first.param_dtype, first.grad_dtype, DType::f32, [&](auto pt, auto gt, auto) {
        using P = typename decltype(pt)::type;
        using G = typename decltype(gt)::type;
        QuantUpdate& L = *quant_update_;
        L.grid.chunk_elems = int32_t(limits_.chunk_elems);
        pack(
            list, capacity(kQuantN), L.grid.block_start,
            [&](int i, int64_t e) {
              const TensorEntry& t = in.entries[e];
              L.param[i] = t.param;
              L.grad[i] = t.grad;
              for (int k = 0; k < kStates; ++k) {
                L.codes[k][i] = static_cast<uint8_t*>(t.state[k]);
                L.absmax[k][i] = t.absmax[k];
              }
              const double* rounding =
                  in.hyper + int64_t(t.group) * in.hyper_stride + Op::kNumHyper;
              L.store[i] = ParamSlot{t.aux, t.param_mode, uint32_t(rounding[0]), t.tensor_id,
                                     uint32_t(rounding[1])};
              L.grid.numel[i] = t.numel;
              L.grid.chunk_base[i] = chunk_base_[size_t(e)];
              L.slot[i] = int32_t(e);
            },
            [&](int count, int64_t blocks) {
              L.grid.n = count;
              LaunchRecord info;
              info.tensors = count;
              info.scalar_chunks = blocks;  // element by element, in registers
              auto name = [] {
                return std::string(kDirection ? "direction_8bit<" : "update_8bit<") + Op::kName +
                       ", " + type_name<P>() + ", " + type_name<G>() + ">";
              };
              if constexpr (kDirection)
                launcher(name, info, &direction_q8_kernel<Op, P, G, kQuantN>,
                         dim3(unsigned(blocks)), dim3(kBlockThreads), L,
                         static_cast<const Args*>(args()), pipe, partials(2));
              else
                launcher(name, info, &update_q8_kernel<Op, P, G, kQuantN>, dim3(unsigned(blocks)),
                         dim3(kQuantBlockThreads), L, static_cast<const Args*>(args()), pipe);
            });
      });
    }
  }

  void run(const StepInputs& in, const GradPipeline& pipe, Launcher& launcher) {
    const int64_t step_chunks = collect_active(in);
    const bool finish = pipe.max_norm > 0.0 || pipe.rescale_max_norm > 0.0 ||
                        pipe.norm_out != nullptr || pipe.found_inf != nullptr;
    const bool reduce = (finish || pipe.total_out != nullptr) && pipe.total_in == nullptr;
    const bool use_pipeline = reduce || pipe.total_in != nullptr || pipe.loss_scale != nullptr;
    const PipelineState* state = use_pipeline ? pipeline_state() : nullptr;
    const NormMeasure measure{NormType(pipe.norm_type), pipe.norm_p};
    if (reduce)
      norms(in, launcher, 1, ScaleSource{1.f, pipe.loss_scale, nullptr}, measure, partials(0));
    // the total of the chunk partials: in the pipeline kernel's one block, or first in blocks
    // of combine_segment partials (the two-level combine variant)
    const double* totals = partials(0);
    int64_t n_totals = step_chunks;
    const int64_t segment = variants_.combine_segment;
    if (reduce && segment > 0 && step_chunks > segment) {
      launch_combine_partials(partials(0), step_chunks, segment, measure, level2(), launcher);
      totals = level2();
      n_totals = (step_chunks + segment - 1) / segment;
    }
    if (use_pipeline)
      launch_pipeline(PipelineArgs{totals, n_totals, measure, int32_t(reduce), pipe.loss_scale,
                                   pipe.max_norm, pipe.rescale_max_norm, pipe.norm_out,
                                   pipe.found_inf, pipeline_state(), pipe.total_in, pipe.total_out},
                      launcher);
    if (pipe.total_out != nullptr) return;           // the reduction phase only
    const bool report = pipe.tensor_out != nullptr;  // the per-tensor reduction phase only
    if (Op::kReductions == 0 && report) return;
    prepare(in, launcher, state, !report);
    if (Op::kReductions != 0)
      reduce_and_adapt(in, launcher, state, pipe.tensor_out, pipe.tensor_in);
    if (report) return;
    for_type_lists<false>(
        in, [&](auto p, auto g, auto s, auto stored, const std::vector<int64_t>& list) {
          chunk_launches<typename decltype(p)::type, typename decltype(g)::type,
                         typename decltype(s)::type, false, decltype(stored)::value>(in, launcher,
                                                                                     list, state);
        });
    quant_launches(in, launcher, state);
  }

  int device_;
  Limits limits_;
  ResolvedVariants variants_;
  std::vector<int64_t> chunks_;  // per entry
  std::vector<int32_t> fresh_;   // per entry, at build time
  int64_t total_chunks_ = 0;
  int64_t workspace_bytes_ = 0;
  int64_t args_at_ = 0, fresh_at_ = 0, partials_at_ = 0, pipeline_at_ = 0, norms_at_ = 0,
          level2_at_ = 0;
  char* workspace_ = nullptr;
  // per step
  std::vector<int64_t> active_, nonempty_, list_;
  std::vector<int32_t> chunk_base_;
  std::vector<int32_t> row_of_group_;
  // launch parameters, filled on the host and copied by each launch
  std::unique_ptr<Update> update_;
  std::unique_ptr<QuantUpdate> quant_update_;
  std::unique_ptr<Norm> norm_;
  std::unique_ptr<Prepare> prepare_;
  std::unique_ptr<Combine> combine_;
};

// The engine of one op; each op's instantiation is in its own generated source (CMakeLists.txt
// writes engine_<op>.cu from the op list), so they compile in parallel.
template <class Op>
std::unique_ptr<Engine> make_op_engine(const std::vector<TensorEntry>& entries, int device,
                                       int64_t chunk_elems) {
  return std::make_unique<CudaEngine<Op>>(entries, device, chunk_elems);
}

}  // namespace cuda
}  // namespace fastopt
