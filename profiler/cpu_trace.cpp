// cpu_trace.cpp: the CPU range recorder (see cpu_trace.h).
#include "profiler/cpu_trace.h"

namespace moebench::profiler {

int32_t CpuTrace::thread_index_locked(std::thread::id id) {
  for (size_t i = 0; i < threads_.size(); ++i)
    if (threads_[i].first == id) return static_cast<int32_t>(i);
  threads_.emplace_back(id, "thread " + std::to_string(threads_.size()));
  return static_cast<int32_t>(threads_.size() - 1);
}

void CpuTrace::record(const CpuRange& r) {
  std::lock_guard<std::mutex> lock(mu_);
  CpuRange c = r;
  c.thread = thread_index_locked(std::this_thread::get_id());
  ranges_.push_back(c);
}

void CpuTrace::name_this_thread(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  threads_[thread_index_locked(std::this_thread::get_id())].second = name;
}

std::vector<CpuRange> CpuTrace::ranges() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ranges_;
}

std::vector<std::string> CpuTrace::thread_names() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> names;
  names.reserve(threads_.size());
  for (const auto& t : threads_) names.push_back(t.second);
  return names;
}

void CpuTrace::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  ranges_.clear();
}

}  // namespace moebench::profiler
