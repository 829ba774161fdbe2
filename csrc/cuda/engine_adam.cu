// The CUDA engine instantiated for Adam (one file per optimizer: they compile in parallel).
#include "../core/adam.h"
#include "engine.cuh"

namespace fastopt {
namespace cuda {

std::unique_ptr<Engine> make_adam_engine(const std::vector<TensorEntry>& entries, int device,
                                         int64_t chunk_elems) {
  return std::make_unique<CudaEngine<Adam>>(entries, device, chunk_elems);
}

}  // namespace cuda
}  // namespace fastopt
