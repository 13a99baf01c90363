// A thin C ABI over PyTorch's c10d (TCPStore, ProcessGroupGloo, c10d::Reducer) for m6rec-dist.
//
// Every function that can fail returns NULL on success or a malloc'd error message the caller frees with
// m6d_free_string. Tensor handles are tch's `C_tensor*`, which is a `torch::Tensor*` (an at::Tensor*): copying one into
// a std::vector shares its storage, so in-place collectives are visible from Rust.

#include "shim.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

using m6d::dup;
using m6d::guard;

std::string hb_key(int rank) { return "m6rec/heartbeat/" + std::to_string(rank); }
std::string err_key(int rank) { return "m6rec/error/" + std::to_string(rank); }

}  // namespace

struct m6d_store_host {
  c10::intrusive_ptr<c10d::TCPStore> store;
};

struct m6d_reducer {
  std::shared_ptr<c10d::Reducer> reducer;
};

extern "C" {

void m6d_free_string(char* s) { std::free(s); }

// Joins the group: `prefix` namespaces the store keys (a torchrun restart count, say), `host_store` makes this rank
// host the TCPStore (rank 0 without an agent store), `bind` is the address gloo listens on ("" = the host's default).
char* m6d_group_new(const char* master_addr, int port, int rank, int world, bool host_store, int64_t timeout_ms,
                    const char* prefix, const char* bind, const char* ifname, int64_t heartbeat_ms,
                    m6d_group** out) {
  return guard([&] {
    auto g = std::make_unique<m6d_group>();
    g->rank = rank;
    g->world = world;
    g->timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = host_store;
    opts.numWorkers = static_cast<std::size_t>(world);  // every client counts itself in; the host waits for all
    opts.waitWorkers = true;  // clients announce themselves here; only the host waits
    opts.timeout = g->timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(master_addr), opts);
    g->store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    // Announce ourselves before the (blocking) gloo rendezvous, so a peer that times out can tell who never came.
    g->store->add(hb_key(rank), 1);

    auto options = c10d::ProcessGroupGloo::Options::create(g->timeout);
    if (ifname != nullptr && ifname[0] != '\0') {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else if (bind != nullptr && bind[0] != '\0') {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(bind));
    } else {
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto pg_store = c10::make_intrusive<c10d::PrefixStore>("pg", g->store);
    auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(pg_store, rank, world, options);
    auto pg = c10::make_intrusive<c10d::ProcessGroup>(pg_store, rank, world);
    pg->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
    pg->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, backend);
    pg->setGroupName("m6rec");
    g->pg = pg;

    // Liveness: a counter per rank that keeps rising while the process runs, on its own store connection.
    auto hb_store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp->clone());
    m6d_group* raw = g.get();
    auto period = std::chrono::milliseconds(heartbeat_ms);
    g->heartbeat = std::thread([raw, hb_store, period] {
      const std::string key = hb_key(raw->rank);
      while (!raw->stop) {
        try {
          hb_store->add(key, 1);
        } catch (...) {
          return;  // the store is gone (its host ended): nothing left to tell
        }
        auto until = std::chrono::steady_clock::now() + period;
        while (!raw->stop && std::chrono::steady_clock::now() < until) {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      }
    });
    *out = g.release();
  });
}

void m6d_group_free(m6d_group* g) { delete g; }

// Hosts a TCPStore without joining any group, as torchrun's agent does (ranks then connect with
// TORCHELASTIC_USE_AGENT_STORE=True). Port 0 picks a free one; `bound` receives it.
char* m6d_store_host_new(const char* addr, int port, int64_t timeout_ms, m6d_store_host** out, int* bound) {
  return guard([&] {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = true;
    opts.waitWorkers = false;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto h = std::make_unique<m6d_store_host>();
    h->store = c10::make_intrusive<c10d::TCPStore>(std::string(addr), opts);
    *bound = static_cast<int>(h->store->getPort());
    *out = h.release();
  });
}

void m6d_store_host_free(m6d_store_host* h) { delete h; }

// Heartbeat counters of every rank (-1 where the key does not exist); fails when the store cannot be reached.
char* m6d_heartbeats(m6d_group* g, int64_t* out) {
  return guard([&] {
    for (int r = 0; r < g->world; ++r) {
      out[r] = g->store->check({hb_key(r)}) ? g->store->add(hb_key(r), 0) : -1;
    }
  });
}

// Publishes this rank's failure for the others to report.
char* m6d_publish_error(m6d_group* g, const char* message) {
  return guard([&] {
    std::string m(message);
    g->store->set(err_key(g->rank), std::vector<uint8_t>(m.begin(), m.end()));
  });
}

// The failure rank `r` published, or "" when none.
char* m6d_peer_error(m6d_group* g, int r, char** message) {
  return guard([&] {
    *message = nullptr;
    if (g->store->check({err_key(r)})) {
      auto v = g->store->get(err_key(r));
      *message = dup(std::string(v.begin(), v.end()));
    } else {
      *message = dup("");
    }
  });
}

char* m6d_broadcast(m6d_group* g, at::Tensor** tensors, size_t n, int root) {
  return guard([&] {
    std::vector<at::Tensor> ts;
    for (size_t i = 0; i < n; ++i) {
      ts.push_back(*tensors[i]);
    }
    // 250 MB chunks: one flat buffer per chunk instead of one collective per tensor.
    c10d::broadcast_coalesced(g->pg, ts, 250u * 1024u * 1024u, root);
  });
}

// op: 0 sum, 1 max, 2 min, 3 product.
char* m6d_all_reduce(m6d_group* g, at::Tensor* t, int op) {
  return guard([&] {
    c10d::AllreduceOptions o;
    switch (op) {
      case 1: o.reduceOp = c10d::ReduceOp::MAX; break;
      case 2: o.reduceOp = c10d::ReduceOp::MIN; break;
      case 3: o.reduceOp = c10d::ReduceOp::PRODUCT; break;
      default: o.reduceOp = c10d::ReduceOp::SUM; break;
    }
    std::vector<at::Tensor> ts{*t};
    g->pg->allreduce(ts, o)->wait(g->timeout);
  });
}

// outputs: `world` tensors shaped like input.
char* m6d_all_gather(m6d_group* g, at::Tensor* input, at::Tensor** outputs) {
  return guard([&] {
    std::vector<at::Tensor> in{*input};
    std::vector<std::vector<at::Tensor>> outs(1);
    for (int r = 0; r < g->world; ++r) {
      outs[0].push_back(*outputs[r]);
    }
    g->pg->allgather(outs, in)->wait(g->timeout);
  });
}

char* m6d_barrier(m6d_group* g) {
  return guard([&] { g->pg->barrier()->wait(g->timeout); });
}

// PyTorch's DDP gradient engine over `params` (leaf tensors that require grad), named for its error messages.
char* m6d_reducer_new(m6d_group* g, at::Tensor** params, const char** names, size_t n, int64_t bucket_bytes,
                      int64_t first_bucket_bytes, bool find_unused, m6d_reducer** out) {
  return guard([&] {
    std::vector<at::Tensor> ps;
    std::unordered_map<size_t, std::string> name_map;
    for (size_t i = 0; i < n; ++i) {
      ps.push_back(*params[i]);
      name_map[i] = names[i];
    }
    std::vector<bool> sparse(n, false);
    // As torch.nn.parallel.DistributedDataParallel: without unused parameters, one bucket until the first backward
    // shows the real gradient order; the buckets are then rebuilt in that order (rebuild_buckets before forward).
    std::vector<size_t> limits;
    if (find_unused && first_bucket_bytes < bucket_bytes) {
      limits = {static_cast<size_t>(first_bucket_bytes), static_cast<size_t>(bucket_bytes)};
    } else if (find_unused) {
      limits = {static_cast<size_t>(bucket_bytes)};
    } else {
      limits = {std::numeric_limits<size_t>::max()};
    }
    auto [buckets, per_bucket] = c10d::compute_bucket_assignment_by_size(ps, limits, sparse);
    std::reverse(buckets.begin(), buckets.end());
    auto r = std::make_unique<m6d_reducer>();
    r->reducer = std::make_shared<c10d::Reducer>(ps, buckets, g->pg, sparse, bucket_bytes, find_unused,
                                                 /*gradient_as_bucket_view=*/false, name_map, first_bucket_bytes,
                                                 /*skip_all_reduce_unused_params=*/false,
                                                 /*use_python_reducer=*/false, std::vector<int64_t>{});
    *out = r.release();
  });
}

void m6d_reducer_free(m6d_reducer* r) { delete r; }

// Before the forward pass of a step whose gradients are to be averaged: rebuilds buckets after the first step (a
// collective: every rank calls it at the same step), then arms the autograd hooks.
char* m6d_reducer_prepare_forward(m6d_reducer* r) {
  return guard([&] {
    r->reducer->rebuild_buckets();
    r->reducer->prepare_for_forward();
  });
}

// After the forward pass: `outputs` are what backward starts from (used to find unused parameters).
char* m6d_reducer_prepare_backward(m6d_reducer* r, at::Tensor** outputs, size_t n) {
  return guard([&] {
    std::vector<at::Tensor> os;
    for (size_t i = 0; i < n; ++i) {
      os.push_back(*outputs[i]);
    }
    r->reducer->prepare_for_backward(os);
  });
}

}  // extern "C"
