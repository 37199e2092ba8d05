// rank_threads.h: one long-lived host thread per rank of a multi-GPU model, each running
// the calls of its rank (engine/cuda/parallel_model.h: every forward runs each rank's
// forward on that rank's thread, where its GPU is current). The threads start once, with
// a per-thread setup (cudaSetDevice), and wait between jobs, so a decode step does not
// pay for creating and joining N threads. Host C++, no CUDA.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace moebench {

class RankThreads {
 public:
  // n threads; thread r runs setup(r) once before its first job (a throw there is
  // rethrown by the first run()).
  RankThreads(int n, std::function<void(int rank)> setup);
  ~RankThreads();
  RankThreads(const RankThreads&) = delete;
  RankThreads& operator=(const RankThreads&) = delete;

  int size() const { return static_cast<int>(threads_.size()); }
  // Runs f(r) on thread r for every rank, waits for all of them, then rethrows the
  // exception of the lowest rank that threw. One caller at a time.
  void run(const std::function<void(int rank)>& f);

 private:
  void loop(int rank);

  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int)>* job_ = nullptr;
  uint64_t generation_ = 0;  // counts jobs handed out
  int pending_ = 0;          // ranks still running the current job
  bool stop_ = false;
  std::function<void(int)> setup_;
  std::vector<std::exception_ptr> errors_;        // of the current job, by rank
  std::vector<std::exception_ptr> setup_errors_;  // by rank
  std::vector<std::thread> threads_;
};

}  // namespace moebench
