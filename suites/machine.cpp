// machine.cpp: see machine.h.
#include "suites/machine.h"

#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <thread>
#include <vector>

#include "common/env.h"
#include "engine/device_info.h"
#include "engine/engine.h"
#include "common/error.h"
#include "common/log.h"
#if MOEBENCH_CUDA_MODEL
#include "engine/cuda/bandwidth.h"
#endif

namespace moebench::suites {

std::string cpu_model_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    auto colon = line.find(':');
    if (colon == std::string::npos) break;
    std::string v = line.substr(colon + 1);
    v.erase(0, v.find_first_not_of(" \t"));
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.pop_back();
    if (!v.empty()) return v;
  }
  return "unknown CPU";
}

reports::HostInfo host_info() {
  reports::HostInfo h;
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) == 0) h.name = name;
  h.cpu_model = cpu_model_name();
  h.cores = static_cast<int>(std::thread::hardware_concurrency());
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) h.memory_bytes = static_cast<int64_t>(pages) * page;
  return h;
}

double measure_copy_gbps(size_t bytes, int repeats) {
  std::vector<char> a(bytes, 1), b(bytes, 2);  // touched: no page faults inside the timing
  double best_s = 0;
  for (int i = 0; i < repeats; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    std::memcpy(i % 2 ? a.data() : b.data(), i % 2 ? b.data() : a.data(), bytes);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i == 0 || s < best_s) best_s = s;
  }
  volatile char sink = a[bytes / 2] + b[bytes / 3];
  (void)sink;
  return best_s > 0 ? 2.0 * static_cast<double>(bytes) / best_s / 1e9 : 0.0;
}

namespace {
// The widest vector the build targets natively (a wider generic vector is split
// into narrower ones and runs at half speed or less).
#if defined(__AVX512F__)
constexpr size_t kVectorBytes = 64;
#elif defined(__AVX__)
constexpr size_t kVectorBytes = 32;
#else
constexpr size_t kVectorBytes = 16;
#endif
}  // namespace

double measure_read_gbps(size_t bytes, int threads) {
  // Four independent XOR chains per thread, so the loads, not the reduction, set the pace.
  using V = uint64_t __attribute__((vector_size(kVectorBytes)));
  constexpr size_t kChains = 4;
  const size_t n = std::max<size_t>(std::min<size_t>(bytes, size_t{1} << 30) / sizeof(V), kChains * 64) / kChains * kChains;
  threads = std::max(threads, 1);
  std::unique_ptr<V[]> buf(new V[n]);
  std::vector<double> gbps(static_cast<size_t>(threads), 0.0);
  uint64_t sink = 0;
  // One parallel region: each thread touches its own slice (first touch places its
  // pages), then times its own passes over it. No barrier between passes, so a
  // thread the scheduler set aside (a loaded machine) does not stretch the others'
  // passes; each thread keeps its best pass.
#pragma omp parallel num_threads(threads) reduction(^ : sink)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const size_t groups = n / kChains;
    const size_t lo = groups * static_cast<size_t>(t) / static_cast<size_t>(nt) * kChains;
    const size_t hi = groups * static_cast<size_t>(t + 1) / static_cast<size_t>(nt) * kChains;
    for (size_t i = lo; i < hi; ++i) buf[i] = V{} + static_cast<uint64_t>(i);
    double best_s = 0, total_s = 0;
    V a0{}, a1{}, a2{}, a3{};
    for (int pass = 0; hi > lo && pass < 1000 && (pass < 5 || total_s < 0.03); ++pass) {
      auto t0 = std::chrono::steady_clock::now();
      for (size_t i = lo; i < hi; i += kChains) {
        a0 ^= buf[i];
        a1 ^= buf[i + 1];
        a2 ^= buf[i + 2];
        a3 ^= buf[i + 3];
      }
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      total_s += s;
      if (pass == 0 || s < best_s) best_s = s;
    }
    const V a = a0 ^ a1 ^ a2 ^ a3;
    for (size_t k = 0; k < sizeof(V) / sizeof(uint64_t); ++k) sink ^= a[k];
    if (best_s > 0) gbps[static_cast<size_t>(t)] = static_cast<double>((hi - lo) * sizeof(V)) / best_s / 1e9;
  }
  volatile uint64_t keep = sink;  // the folds are used: no pass can be dropped
  (void)keep;
  double total = 0;
  for (double g : gbps) total += g;
  return total;
}

int64_t process_peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;  // "VmHWM:   123456 kB"
  rusage u{};
  if (getrusage(RUSAGE_SELF, &u) == 0 && u.ru_maxrss > 0) return static_cast<int64_t>(u.ru_maxrss) * 1024;  // KiB on Linux
  return 0;
}

std::string resolve_backend(const std::string& requested) {
  if (requested == "cpu") return "cpu";
  if (requested != "auto" && requested != "cuda") fail("backend '{}': expected auto, cpu or cuda", requested);
  const bool model = MOEBENCH_CUDA_MODEL != 0;
  if (requested == "auto") return model && !cuda_devices().empty() ? "cuda" : "cpu";
  if (!model)
    fail("backend cuda is not available in this build ({})",
         cuda_compiled() ? "the CUDA model is not compiled in yet" : "built without CUDA");
  if (cuda_devices().empty()) fail("backend cuda: no usable CUDA device ({})", cuda_unavailable_reason());
  return "cuda";
}

reports::DeviceInfo device_info(const std::string& backend, bool measure) {
  reports::DeviceInfo d;
  if (backend == "cuda") {
    auto devs = cuda_devices();
    if (devs.empty()) fail("backend cuda: no CUDA device ({})", cuda_unavailable_reason());
    const CudaDeviceInfo& g = devs[0];
    d.kind = reports::DeviceKind::cuda;
    d.name = g.name;
    // Launch decisions taken for another GPU's capability (engine/cuda/device.h): the device
    // runs other code, and its results say so.
    if (const std::string cc = env_str("MOEBENCH_GPU_CC"); !cc.empty()) d.name += " as compute capability " + cc;
    d.sm_count = g.sms;
    d.memory_bytes = static_cast<int64_t>(g.memory_bytes);
    d.driver = g.driver;
    if (!measure) {
      log::warn("device {}: bandwidth not measured (h2d_gbps and hbm_gbps are 0; no bound is computed)", g.name);
      return d;
    }
#if MOEBENCH_CUDA_MODEL
    // Before any model takes the memory (1 GiB x 2 for the copy kernel, 256 MiB pinned).
    d.hbm_read_gbps = cuda::measure_hbm_read().gbps;
    d.hbm_copy_gbps = cuda::measure_hbm_copy().gbps;
    d.hbm_gbps = std::max(d.hbm_read_gbps, d.hbm_copy_gbps);
    d.h2d_gbps = cuda::measure_h2d_pinned().gbps;
    log::info("device {}: measured HBM read stream {}, copy kernel {} (read + write), host->device {} (pinned)", g.name,
              fmt::format("{:.0f} GB/s", d.hbm_read_gbps), fmt::format("{:.0f} GB/s", d.hbm_copy_gbps),
              fmt::format("{:.1f} GB/s", d.h2d_gbps));
#else
    log::warn("device {}: built without the CUDA model, bandwidth not measured (no bound is computed)", g.name);
#endif
    return d;
  }
  reports::HostInfo h = host_info();
  d.kind = reports::DeviceKind::cpu;
  d.name = h.cpu_model;
  d.memory_bytes = h.memory_bytes;
  if (measure) d.hbm_gbps = measure_copy_gbps();
  return d;
}

}  // namespace moebench::suites
