// rank_threads.cpp: see rank_threads.h.
#include "engine/rank_threads.h"

#include "common/error.h"

namespace moebench {

RankThreads::RankThreads(int n, std::function<void(int rank)> setup) : setup_(std::move(setup)) {
  if (n < 1) fail("rank threads: {} ranks (expected at least 1)", n);
  errors_.assign(n, nullptr);
  setup_errors_.assign(n, nullptr);
  threads_.reserve(n);
  for (int r = 0; r < n; ++r) threads_.emplace_back([this, r] { loop(r); });
}

RankThreads::~RankThreads() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void RankThreads::loop(int rank) {
  try {
    if (setup_) setup_(rank);
  } catch (...) {
    setup_errors_[rank] = std::current_exception();  // read by run() after a job's handshake
  }
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int)>* job = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      job = job_;
    }
    std::exception_ptr err = setup_errors_[rank];
    if (!err) {
      try {
        (*job)(rank);
      } catch (...) {
        err = std::current_exception();
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    errors_[rank] = err;
    if (--pending_ == 0) done_cv_.notify_one();
  }
}

void RankThreads::run(const std::function<void(int rank)>& f) {
  std::unique_lock<std::mutex> lock(mu_);
  job_ = &f;
  pending_ = size();
  ++generation_;
  start_cv_.notify_all();
  done_cv_.wait(lock, [&] { return pending_ == 0; });
  job_ = nullptr;
  for (auto& e : errors_)
    if (e) {
      std::exception_ptr first = e;
      for (auto& x : errors_) x = nullptr;
      lock.unlock();
      std::rethrow_exception(first);
    }
}

}  // namespace moebench
