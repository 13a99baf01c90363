// Shared by the shim's translation units: the group object and the error convention of the C ABI.
#pragma once

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace m6d {

// A malloc'd copy, for the Rust side to free with m6d_free_string.
inline char* dup(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.c_str(), s.size() + 1);
  }
  return out;
}

// Runs `f`; NULL when it returned, else its exception's message. Collectives write parameters in place: autograd
// must not record (or refuse) that, hence no grad mode.
template <typename F>
char* guard(F&& f) {
  try {
    at::NoGradGuard no_grad;
    f();
    return nullptr;
  } catch (const c10::Error& e) {
    return dup(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return dup(e.what());
  } catch (...) {
    return dup("unknown C++ exception");
  }
}

}  // namespace m6d

struct m6d_group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  int rank = 0;
  int world = 1;
  std::chrono::milliseconds timeout{0};
  std::atomic<bool> stop{false};
  std::thread heartbeat;

  ~m6d_group() {
    stop = true;
    if (heartbeat.joinable()) {
      heartbeat.join();
    }
  }
};
