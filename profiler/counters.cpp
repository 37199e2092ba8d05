// counters.cpp: the always-on counters (see counters.h).
#include "profiler/counters.h"

#include <algorithm>

#include "common/error.h"

#ifdef MOEBENCH_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace moebench::profiler {

const char* phase_name(Phase p) { return p == Phase::prefill ? "prefill" : "decode"; }

// ---- tokens ----

int64_t TokenCounters::steps(Phase p) const {
  return std::count_if(samples.begin(), samples.end(), [p](const TokenSample& s) { return s.phase == p; });
}

int64_t TokenCounters::tokens(Phase p) const {
  int64_t n = 0;
  for (const auto& s : samples)
    if (s.phase == p) n += s.n_tokens;
  return n;
}

int64_t TokenCounters::total_ns(Phase p) const {
  int64_t t = 0;
  for (const auto& s : samples)
    if (s.phase == p) t += s.latency_ns;
  return t;
}

std::vector<int64_t> TokenCounters::latencies_ns(Phase p) const {
  std::vector<int64_t> out;
  for (const auto& s : samples)
    if (s.phase == p) out.push_back(s.latency_ns);
  return out;
}

// ---- experts ----

double ExpertStats::hit_rate() const {
  const int64_t routed = hits + misses;
  return routed == 0 ? 1.0 : static_cast<double>(hits) / static_cast<double>(routed);
}

ExpertStats& ExpertStats::operator+=(const ExpertStats& o) {
  hits += o.hits;
  misses += o.misses;
  loads += o.loads;
  bytes_moved += o.bytes_moved;
  load_ns += o.load_ns;
  stall_ns += o.stall_ns;
  host_experts += o.host_experts;
  host_bytes += o.host_bytes;
  host_ns += o.host_ns;
  host_layers += o.host_layers;
  host_overhead_ns += o.host_overhead_ns;
  joint_copy_bytes += o.joint_copy_bytes;
  joint_copy_ns += o.joint_copy_ns;
  joint_host_bytes += o.joint_host_bytes;
  joint_host_ns += o.joint_host_ns;
  return *this;
}

ExpertStats operator-(ExpertStats a, const ExpertStats& b) {
  a.hits -= b.hits;
  a.misses -= b.misses;
  a.loads -= b.loads;
  a.bytes_moved -= b.bytes_moved;
  a.load_ns -= b.load_ns;
  a.stall_ns -= b.stall_ns;
  a.host_experts -= b.host_experts;
  a.host_bytes -= b.host_bytes;
  a.host_ns -= b.host_ns;
  a.host_layers -= b.host_layers;
  a.host_overhead_ns -= b.host_overhead_ns;
  a.joint_copy_bytes -= b.joint_copy_bytes;
  a.joint_copy_ns -= b.joint_copy_ns;
  a.joint_host_bytes -= b.joint_host_bytes;
  a.joint_host_ns -= b.joint_host_ns;
  return a;
}

void ExpertCounters::configure(int32_t n_layers, int32_t n_experts) {
  if (n_layers < 0 || n_experts < 0)
    fail("expert counters: shape ({} layers, {} experts) must not be negative", n_layers, n_experts);
  n_layers_ = n_layers;
  n_experts_ = n_experts;
  layers_.assign(static_cast<size_t>(n_layers), ExpertStats{});
  usage_.assign(static_cast<size_t>(n_layers) * static_cast<size_t>(n_experts), 0);
  total_ = total_at_last_token_ = ExpertStats{};
  per_token_.clear();
}

void ExpertCounters::check(int32_t layer, int32_t expert, const char* what) const {
  if (layer < 0 || layer >= n_layers_)
    fail("expert counters: {} for layer {}, but the counters have {} layers (configure first)", what, layer,
         n_layers_);
  if (expert >= n_experts_)
    fail("expert counters: {} for expert {} of layer {}, but the counters have {} experts", what, expert, layer,
         n_experts_);
}

void ExpertCounters::route(int32_t layer, int32_t expert, bool hit) {
  if (expert < 0) fail("expert counters: route to expert {} of layer {}", expert, layer);
  check(layer, expert, "route");
  ExpertStats& l = layers_[static_cast<size_t>(layer)];
  if (hit) {
    ++l.hits;
    ++total_.hits;
  } else {
    ++l.misses;
    ++total_.misses;
  }
  ++usage_[static_cast<size_t>(layer) * static_cast<size_t>(n_experts_) + static_cast<size_t>(expert)];
}

void ExpertCounters::load(int32_t layer, int64_t bytes, int64_t load_ns) {
  part_load(layer, bytes, load_ns);
  ++layers_[static_cast<size_t>(layer)].loads;
  ++total_.loads;
}

void ExpertCounters::part_load(int32_t layer, int64_t bytes, int64_t load_ns) {
  check(layer, -1, "part load");
  ExpertStats& l = layers_[static_cast<size_t>(layer)];
  l.bytes_moved += bytes;
  total_.bytes_moved += bytes;
  l.load_ns += load_ns;
  total_.load_ns += load_ns;
}

void ExpertCounters::host_route(int32_t layer, int32_t expert) {
  if (expert < 0) fail("expert counters: host route to expert {} of layer {}", expert, layer);
  check(layer, expert, "host route");
  ++layers_[static_cast<size_t>(layer)].host_experts;
  ++total_.host_experts;
}

void ExpertCounters::host_work(int32_t layer, int64_t bytes, int64_t host_ns) {
  check(layer, -1, "host work");
  ExpertStats& l = layers_[static_cast<size_t>(layer)];
  l.host_bytes += bytes;
  total_.host_bytes += bytes;
  l.host_ns += host_ns;
  total_.host_ns += host_ns;
}

void ExpertCounters::host_overhead(int32_t layer, int64_t ns) {
  check(layer, -1, "host overhead");
  ExpertStats& l = layers_[static_cast<size_t>(layer)];
  ++l.host_layers;
  ++total_.host_layers;
  l.host_overhead_ns += ns;
  total_.host_overhead_ns += ns;
}

void ExpertCounters::both_links(int32_t layer, int64_t copy_bytes, int64_t copy_ns, int64_t host_bytes,
                                int64_t host_ns) {
  check(layer, -1, "both links");
  for (ExpertStats* s : {&layers_[static_cast<size_t>(layer)], &total_}) {
    s->joint_copy_bytes += copy_bytes;
    s->joint_copy_ns += copy_ns;
    s->joint_host_bytes += host_bytes;
    s->joint_host_ns += host_ns;
  }
}

void ExpertCounters::stall(int32_t layer, int64_t stall_ns) {
  check(layer, -1, "stall");
  layers_[static_cast<size_t>(layer)].stall_ns += stall_ns;
  total_.stall_ns += stall_ns;
}

const ExpertStats& ExpertCounters::layer(int32_t l) const {
  check(l, -1, "read");
  return layers_[static_cast<size_t>(l)];
}

int64_t ExpertCounters::usage(int32_t layer, int32_t expert) const {
  if (expert < 0) fail("expert counters: usage of expert {} of layer {}", expert, layer);
  check(layer, expert, "usage");
  return usage_[static_cast<size_t>(layer) * static_cast<size_t>(n_experts_) + static_cast<size_t>(expert)];
}

std::vector<double> ExpertCounters::hit_rate_series(bool cumulative) const {
  std::vector<double> out;
  out.reserve(per_token_.size());
  ExpertStats acc;
  for (const auto& s : per_token_) {
    acc += s;
    out.push_back(cumulative ? acc.hit_rate() : s.hit_rate());
  }
  return out;
}

void ExpertCounters::end_token() {
  per_token_.push_back(total_ - total_at_last_token_);
  total_at_last_token_ = total_;
}

void ExpertCounters::reset() { configure(n_layers_, n_experts_); }

// ---- memory ----

void MemoryCounters::note_arena(int64_t used_bytes, int64_t peak_bytes) {
  arena_used_bytes = used_bytes;
  arena_peak_bytes = std::max({arena_peak_bytes, used_bytes, peak_bytes});
}

void MemoryCounters::note_host_pinned(int64_t bytes) {
  host_pinned_bytes = bytes;
  host_pinned_peak_bytes = std::max(host_pinned_peak_bytes, bytes);
}

void MemoryCounters::sample(int64_t t_ns, int64_t step, int64_t device_used_bytes) {
  if (device_used_bytes >= 0) device_used_peak_bytes = std::max(device_used_peak_bytes, device_used_bytes);
  timeline.push_back(MemorySample{t_ns, step, arena_used_bytes, device_used_bytes, host_pinned_bytes});
}

void MemoryCounters::reset() {
  arena_peak_bytes = arena_used_bytes;
  host_pinned_peak_bytes = host_pinned_bytes;
  device_used_peak_bytes = -1;
  timeline.clear();
}

std::optional<int64_t> query_device_used_bytes() {
#ifdef MOEBENCH_HAVE_CUDA
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error state
    return std::nullopt;
  }
  return static_cast<int64_t>(total_b - free_b);
#else
  return std::nullopt;
#endif
}

// ---- profiler ----

void Profiler::record_token(Phase phase, int32_t n_tokens, int64_t start_ns, int64_t end_ns) {
  const int64_t step = static_cast<int64_t>(tokens.samples.size());
  tokens.samples.push_back(TokenSample{phase, n_tokens, start_ns, end_ns - start_ns});
  experts.end_token();
  const int32_t every = std::max<int32_t>(1, options.memory_sample_every);
  if (step % every == 0) {
    int64_t device_used = -1;
    if (options.sample_device_memory) {
      if (auto d = query_device_used_bytes()) device_used = *d;
    }
    memory.sample(end_ns, step, device_used);
  }
}

void Profiler::reset_repetition() {
  tokens.samples.clear();
  experts.reset();
  memory.reset();
  trace.clear();
}

}  // namespace moebench::profiler
