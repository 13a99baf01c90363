// NCCL for CUDA tensors (feature `nccl`, built by `cargo xtask build-cuda` against the CUDA wheel and the NVIDIA pip
// packages' headers). Never compiled on CPU CI.

#include "shim.h"

#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

extern "C" {

// Adds a ProcessGroupNCCL over the group's store for CUDA tensors on `device` (collectives on CPU tensors stay on
// Gloo). Every rank calls it, after m6d_group_new.
char* m6d_group_add_nccl(m6d_group* g, int device) {
  return m6d::guard([&] {
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = g->timeout;
    auto store = c10::make_intrusive<c10d::PrefixStore>("nccl", g->store);
    auto backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, g->rank, g->world, options);
    g->pg->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, backend);
  });
}

}  // extern "C"
