// The CUDA engine instantiated for Sgd (one file per optimizer: they compile in parallel).
#include "../core/sgd.h"
#include "engine.cuh"

namespace fastopt {
namespace cuda {

std::unique_ptr<Engine> make_sgd_engine(const std::vector<TensorEntry>& entries, int device,
                                        int64_t chunk_elems) {
  return std::make_unique<CudaEngine<Sgd>>(entries, device, chunk_elems);
}

}  // namespace cuda
}  // namespace fastopt
