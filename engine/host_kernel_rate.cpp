// host_kernel_rate.cpp: see host_kernel_rate.h.
#include "engine/host_kernel_rate.h"

#include <fmt/format.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <mutex>
#include <string>

#include "common/clock.h"
#include "common/error.h"

namespace moebench {

namespace {
constexpr int64_t kUnknownCacheBytes = 512ll << 20;

// sysfs writes sizes as "307200K" (or "30M", or bytes).
int64_t parse_cache_size(const std::string& s) {
  if (s.empty() || s[0] < '0' || s[0] > '9') return 0;
  size_t pos = 0;
  const long long v = std::stoll(s, &pos);
  const char unit = pos < s.size() ? s[pos] : ' ';
  return unit == 'K' ? v << 10 : unit == 'M' ? v << 20 : unit == 'G' ? v << 30 : v;
}
}  // namespace

int64_t last_level_cache_bytes() {
#ifdef _SC_LEVEL3_CACHE_SIZE
  if (const long v = sysconf(_SC_LEVEL3_CACHE_SIZE); v > 0) return v;
#endif
  for (int index = 3; index >= 2; --index) {
    std::ifstream f(fmt::format("/sys/devices/system/cpu/cpu0/cache/index{}/size", index));
    std::string s;
    if (f >> s) {
      if (const int64_t b = parse_cache_size(s); b > 0) return b;
    }
  }
  return 0;
}

std::vector<ExpertKey> both_links_copy_experts(int n_layers, int n_experts, int count) {
  if (n_layers <= 0 || n_experts <= 0 || count < 0)
    fail("both links' measurement: {} layers x {} experts, {} copies: expected positive sizes", n_layers, n_experts,
         count);
  std::vector<ExpertKey> out;
  for (int i = 0; i < count; ++i)
    out.push_back(ExpertKey{n_layers - 1 - (i / n_experts) % n_layers, n_experts - 1 - i % n_experts});
  return out;
}

HostRatePlan host_rate_plan(int n_layers, int n_experts, int64_t expert_bytes, int64_t cache_bytes) {
  if (n_layers <= 0 || n_experts <= 0 || expert_bytes <= 0)
    fail("host kernel rate: {} layers x {} experts of {} bytes: expected positive sizes", n_layers, n_experts,
         expert_bytes);
  const int64_t cache = cache_bytes > 0 ? cache_bytes : kUnknownCacheBytes;
  auto experts_for = [&](int64_t bytes) { return static_cast<int>((bytes + expert_bytes - 1) / expert_bytes); };
  HostRatePlan p;
  const int64_t total = static_cast<int64_t>(n_layers) * n_experts;
  p.flush = std::max(1, experts_for(kHostRateFlushFactor * cache));
  int samples = std::max(kHostRateSamples, experts_for(kHostRateColdFactor * cache));
  p.cold = p.flush + samples <= total;
  if (!p.cold) {  // the weights fit in the cache: every expert once to warm it, then the samples
    p.flush = static_cast<int>(std::min<int64_t>(p.flush, total));
    samples = static_cast<int>(std::max<int64_t>(kHostRateSamples, std::min<int64_t>(samples, total)));
  }
  for (int s = 0; s < p.flush + samples; ++s) {
    const int64_t i = s % total;  // wraps around only when not cold
    p.experts.push_back(ExpertKey{static_cast<int>(i % n_layers), static_cast<int>((i / n_layers) % n_experts)});
  }
  return p;
}

profiler::HostKernelRate summarize_host_rates(std::vector<double> gbps) {
  if (gbps.empty()) fail("host kernel rate: no sample");
  for (double g : gbps)
    if (!(g > 0)) fail("host kernel rate: a sample of {} GB/s, expected a positive rate", g);
  std::sort(gbps.begin(), gbps.end());
  const size_t n = gbps.size();
  profiler::HostKernelRate r;
  r.best_gbps = gbps.back();
  r.worst_gbps = gbps.front();
  r.median_gbps = n % 2 ? gbps[n / 2] : 0.5 * (gbps[n / 2 - 1] + gbps[n / 2]);
  r.samples = static_cast<int>(n);
  return r;
}

cpu::CpuExpert host_store_expert(const ExpertHostStore& store, int layer, int e) {
  const auto* base = reinterpret_cast<const uint8_t*>(store.expert(layer, e));
  const ExpertLayout& L = store.layout();
  const int64_t H = store.hidden(), I = store.inter();
  auto mat = [&](int m, int64_t rows, int64_t cols) {
    cpu::CpuMatrix w;
    w.format = L.format;
    w.rows = rows;
    w.cols = cols;
    w.q = base + L.offset[m][0];
    w.scale = L.n_parts > 1 ? base + L.offset[m][1] : nullptr;
    w.zero = L.n_parts > 2 ? base + L.offset[m][2] : nullptr;
    return w;
  };
  return cpu::CpuExpert{mat(0, I, H), mat(1, I, H), mat(2, H, I)};
}

profiler::HostKernelRate measure_host_kernel_rate(const ExpertHostStore& store, cpu::CpuIsa isa) {
  if (store.tier() != HostTier::pinned)
    fail("host kernel rate: needs the pinned tier's experts in memory, the store is {}", host_tier_name(store.tier()));
  const int64_t cache = last_level_cache_bytes();
  const int64_t bytes = static_cast<int64_t>(store.expert_bytes());
  const HostRatePlan plan = host_rate_plan(store.n_layers(), store.n_experts(), bytes, cache);
  std::vector<float> x(static_cast<size_t>(store.hidden()), 0.01f), y(x.size());
  std::vector<float> scratch(cpu::cpu_expert_scratch_floats(1, store.inter()));
  std::vector<double> gbps;
  for (size_t s = 0; s < plan.experts.size(); ++s) {
    const cpu::CpuExpert e = host_store_expert(store, plan.experts[s].layer, plan.experts[s].expert);
    const int64_t t0 = profiler::now_ns();
    cpu::cpu_expert_forward(e, x.data(), y.data(), scratch.data(), 1, isa);
    const int64_t ns = std::max<int64_t>(1, profiler::now_ns() - t0);
    if (static_cast<int>(s) >= plan.flush) gbps.push_back(static_cast<double>(bytes) / static_cast<double>(ns));
  }
  profiler::HostKernelRate r = summarize_host_rates(std::move(gbps));
  r.threads = omp_get_max_threads();
  r.cold = plan.cold;
  r.cache_bytes = cache;
  return r;
}

std::vector<ExpertKey> host_read_order(int n_layers, int n_experts, const std::vector<ExpertKey>& skip) {
  if (n_layers <= 0 || n_experts <= 0)
    fail("host kernel rate: {} layers x {} experts: expected positive sizes", n_layers, n_experts);
  std::vector<ExpertKey> out;
  const int64_t total = static_cast<int64_t>(n_layers) * n_experts;
  for (int64_t i = 0; i < total; ++i) {
    const ExpertKey k{static_cast<int>(i % n_layers), static_cast<int>(i / n_layers)};
    if (std::find(skip.begin(), skip.end(), k) == skip.end()) out.push_back(k);
  }
  return out;
}

HostReadSum measure_host_kernel_while(const ExpertHostStore& store, cpu::CpuIsa isa, const std::vector<ExpertKey>& skip,
                                      const std::function<bool()>& running) {
  if (store.tier() != HostTier::pinned)
    fail("host kernel rate: needs the pinned tier's experts in memory, the store is {}", host_tier_name(store.tier()));
  const int64_t bytes = static_cast<int64_t>(store.expert_bytes());
  std::vector<float> x(static_cast<size_t>(store.hidden()), 0.01f), y(x.size());
  std::vector<float> scratch(cpu::cpu_expert_scratch_floats(1, store.inter()));
  const std::vector<ExpertKey> order = host_read_order(store.n_layers(), store.n_experts(), skip);
  HostReadSum sum;
  for (size_t s = 0; s < order.size() && running(); ++s) {
    const cpu::CpuExpert e = host_store_expert(store, order[s].layer, order[s].expert);
    const int64_t t0 = profiler::now_ns();
    cpu::cpu_expert_forward(e, x.data(), y.data(), scratch.data(), 1, isa);
    const int64_t ns = std::max<int64_t>(1, profiler::now_ns() - t0);
    if (s > 0 && running()) sum.bytes += bytes, sum.ns += ns, ++sum.samples;
  }
  return sum;
}

profiler::HostKernelRate host_kernel_rate(const ExpertHostStore& store, cpu::CpuIsa isa) {
  static std::mutex mu;
  static std::map<std::string, profiler::HostKernelRate> measured;
  const std::string key = fmt::format("{}|{}|{}|{}|{}", static_cast<const void*>(&store), store.describe(),
                                      quant_format_name(store.format()), cpu::cpu_isa_name(isa), omp_get_max_threads());
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = measured.find(key); it != measured.end()) return it->second;
  const profiler::HostKernelRate r = measure_host_kernel_rate(store, isa);
  measured[key] = r;
  return r;
}

}  // namespace moebench
