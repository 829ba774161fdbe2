// The CUDA engine instantiated for Lars (one file per optimizer: they compile in parallel).
#include "../core/lars.h"
#include "engine.cuh"

namespace fastopt {
namespace cuda {

std::unique_ptr<Engine> make_lars_engine(const std::vector<TensorEntry>& entries, int device,
                                         int64_t chunk_elems) {
  return std::make_unique<CudaEngine<Lars>>(entries, device, chunk_elems);
}

}  // namespace cuda
}  // namespace fastopt
