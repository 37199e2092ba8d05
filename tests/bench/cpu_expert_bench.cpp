// cpu_expert_bench.cpp: the CPU expert kernels (engine/ops/cpu_expert.h) at the Mixtral
// expert shape (hidden 4096, inter 14336) for 1 and 8 tokens, every weight format on
// every ISA this CPU runs (Google Benchmark, manual time; its own binary,
// moebench_cpu_bench). Beside each: the weight bytes read per second (`bytes`, one
// expert's w1 + w3 + w2 per call, scales included) and that rate as a percentage of the
// host's read stream (`pct_of_read`), measured in this process with the runner's
// function (suites/machine.h measure_read_gbps, all OpenMP threads) and printed in the
// context as host_read_gbps. Each call reads the next of several copies of the expert
// (at least 768 MiB in all), so the weights come from memory, not the last-level cache.
// int4 on the AVX-512 ISAs runs once per --int4_kernels value (MOEBENCH_CPU_INT4, set
// for that benchmark only; default old,new), under avx512_bf16 as well: the ISA the
// engine picks on such a CPU.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine/ops/cpu_expert.h"
#include "engine/ops/cpu_isa.h"
#include "engine/quant.h"
#include "engine/synth_rng.h"
#include "suites/machine.h"

using namespace moebench;
using namespace moebench::cpu;

namespace {

constexpr int64_t kHidden = 4096, kInter = 14336;
constexpr uint64_t kRotateBytes = 768ull << 20;
double g_read_gbps = 0;

// The experts of one format, rebuilt when a benchmark of another format starts
// (benchmarks run in registration order, format by format: one format in memory).
struct Experts {
  QuantFormat format = QuantFormat::bf16;
  bool built = false;
  std::vector<std::unique_ptr<QuantMatrix>> mats;  // w1, w3, w2 per copy
  std::vector<CpuExpert> experts;
  uint64_t expert_bytes = 0;
};
Experts g_experts;

QuantMatrix synth_matrix(QuantFormat f, int64_t rows, int64_t cols, const char* name) {
  std::vector<float> w(static_cast<size_t>(rows * cols));
  const uint64_t key = synth::tensor_key(7, synth::name_hash(name));
  const float scale = 1.0f / std::sqrt(static_cast<float>(cols));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows * cols; ++i) w[static_cast<size_t>(i)] = synth::value(key, static_cast<uint64_t>(i), scale, 0.0f);
  return quantize(f, w.data(), rows, cols);
}

const Experts& experts_of(QuantFormat f) {
  if (g_experts.built && g_experts.format == f) return g_experts;
  g_experts = Experts{};
  g_experts.format = f;
  const QuantMatrix w1 = synth_matrix(f, kInter, kHidden, "w1"), w3 = synth_matrix(f, kInter, kHidden, "w3"),
                    w2 = synth_matrix(f, kHidden, kInter, "w2");
  g_experts.expert_bytes = w1.nbytes() + w3.nbytes() + w2.nbytes();
  const uint64_t copies = (kRotateBytes + g_experts.expert_bytes - 1) / g_experts.expert_bytes;
  for (uint64_t c = 0; c < copies; ++c)
    for (const QuantMatrix* m : {&w1, &w3, &w2}) g_experts.mats.push_back(std::make_unique<QuantMatrix>(*m));
  for (size_t c = 0; c < g_experts.mats.size(); c += 3)
    g_experts.experts.push_back({cpu_matrix(*g_experts.mats[c]), cpu_matrix(*g_experts.mats[c + 1]),
                                 cpu_matrix(*g_experts.mats[c + 2])});
  g_experts.built = true;
  return g_experts;
}

// Sets an environment variable for one benchmark's run and puts the old value back.
struct ScopedEnv {
  std::string name, old;
  bool had = false, set = false;
  ScopedEnv(const char* n, const std::string& value) : name(n) {
    if (value.empty()) return;
    if (const char* v = std::getenv(n)) had = true, old = v;
    setenv(n, value.c_str(), 1);
    set = true;
  }
  ~ScopedEnv() {
    if (!set) return;
    if (had)
      setenv(name.c_str(), old.c_str(), 1);
    else
      unsetenv(name.c_str());
  }
};

// int4_kernel: a MOEBENCH_CPU_INT4 value for this benchmark ("" leaves the variable as is).
void bm_expert(benchmark::State& state, QuantFormat f, CpuIsa isa, int n, const std::string& int4_kernel) {
  const ScopedEnv env("MOEBENCH_CPU_INT4", int4_kernel);
  const Experts& e = experts_of(f);
  std::vector<float> x(static_cast<size_t>(n * kHidden)), out(static_cast<size_t>(n * kHidden));
  std::vector<float> scratch(cpu_expert_scratch_floats(n, kInter));
  for (size_t i = 0; i < x.size(); ++i) x[i] = synth::value(11, i, 1.0f, 0.0f);
  size_t next = 0;
  cpu_expert_forward(e.experts[next++ % e.experts.size()], x.data(), out.data(), scratch.data(), n, isa);  // warm-up
  double total_s = 0;
  for (auto _ : state) {
    const CpuExpert& ex = e.experts[next++ % e.experts.size()];
    const auto t0 = std::chrono::steady_clock::now();
    cpu_expert_forward(ex, x.data(), out.data(), scratch.data(), n, isa);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    benchmark::DoNotOptimize(out.data());
    state.SetIterationTime(s);
    total_s += s;
  }
  const double bytes = static_cast<double>(e.expert_bytes);
  state.counters["bytes"] =
      benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  if (g_read_gbps > 0 && total_s > 0)
    state.counters["pct_of_read"] = 100.0 * bytes * static_cast<double>(state.iterations()) / total_s / (g_read_gbps * 1e9);
  state.SetLabel(cpu_expert_rounds_activations(isa, f) ? "vdpbf16ps, bf16 activations" : "fp32 FMA");
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  // --int4_kernels=A,B,...: the int4 benchmarks on the AVX-512 ISAs once per
  // MOEBENCH_CPU_INT4 value (default old,new: both kernels in one run).
  std::vector<std::string> int4_kernels = {"old", "new"};
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i], flag = "--int4_kernels=";
    if (a.rfind(flag, 0) != 0) {
      argv[kept++] = argv[i];
      continue;
    }
    int4_kernels.clear();
    for (size_t p = flag.size(); p <= a.size();) {
      const size_t c = a.find(',', p);
      const std::string v = a.substr(p, c == std::string::npos ? std::string::npos : c - p);
      if (!v.empty()) int4_kernels.push_back(v);
      p = c == std::string::npos ? a.size() + 1 : c + 1;
    }
  }
  argc = kept;
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const CpuFeatures have = host_cpu_features();
  std::string isas;
  for (CpuIsa isa : kCpuIsas)
    if (cpu_isa_missing(isa, have).empty()) isas += std::string(isas.empty() ? "" : ",") + cpu_isa_name(isa);
  const int threads = omp_get_max_threads();
  g_read_gbps = suites::measure_read_gbps(size_t{1} << 30, threads);
  benchmark::AddCustomContext("cpu", suites::cpu_model_name());
  benchmark::AddCustomContext("threads", std::to_string(threads));
  benchmark::AddCustomContext("isas", isas);
  benchmark::AddCustomContext("amx", have.amx ? "yes (no kernel uses it)" : "no");
  benchmark::AddCustomContext("host_read_gbps", std::to_string(g_read_gbps));
  for (QuantFormat f : {QuantFormat::bf16, QuantFormat::int8, QuantFormat::int4, QuantFormat::fp8})
    for (CpuIsa isa : kCpuIsas) {
      if (!cpu_isa_missing(isa, have).empty()) continue;
      // int8 and fp8 run avx512's kernels under avx512_bf16; int4 is registered under both
      // (avx512_bf16 is what the engine picks on such a CPU), once per int4 kernel.
      if (isa == CpuIsa::avx512_bf16 && f != QuantFormat::bf16 && f != QuantFormat::int4) continue;
      const bool int4_avx512 = f == QuantFormat::int4 && (isa == CpuIsa::avx512 || isa == CpuIsa::avx512_bf16);
      for (const std::string& k : int4_avx512 ? int4_kernels : std::vector<std::string>{""})
        for (int n : {1, 8}) {
          const std::string name = std::string("cpu_expert/") + quant_format_name(f) + "/" + cpu_isa_name(isa) +
                                   "/n:" + std::to_string(n) + (k.empty() ? "" : "/int4:" + k);
          benchmark::RegisterBenchmark(name.c_str(), [f, isa, n, k](benchmark::State& st) { bm_expert(st, f, isa, n, k); })
              ->UseManualTime()
              ->Unit(benchmark::kMillisecond)
              ->MinTime(0.3);
        }
    }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
