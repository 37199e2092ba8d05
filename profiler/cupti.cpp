// cupti.cpp: CUPTI activity collection (see cupti.h). Every read of a CUPTI
// record struct is in translate_cupti_record(); the rest works on GpuEvent.
#include "profiler/cupti.h"

#include <cxxabi.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <mutex>
#include <unordered_map>

#include "common/log.h"
#include "common/clock.h"

#ifdef MOEBENCH_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <cupti.h>
#endif

namespace moebench::profiler {

const char* gpu_event_kind_name(GpuEventKind k) {
  switch (k) {
    case GpuEventKind::kernel: return "kernel";
    case GpuEventKind::memcpy: return "memcpy";
    case GpuEventKind::memset: return "memset";
    case GpuEventKind::runtime_api: return "runtime_api";
    case GpuEventKind::driver_api: return "driver_api";
  }
  return "?";
}

const char* copy_kind_name(CopyKind k) {
  switch (k) {
    case CopyKind::none: return "none";
    case CopyKind::h2d: return "H2D";
    case CopyKind::d2h: return "D2H";
    case CopyKind::d2d: return "D2D";
    case CopyKind::h2h: return "H2H";
    case CopyKind::p2p: return "P2P";
    case CopyKind::other: return "other";
  }
  return "?";
}

const char* gpu_category_name(GpuCategory c) {
  switch (c) {
    case GpuCategory::gemv_gemm: return "gemv_gemm";
    case GpuCategory::attention: return "attention";
    case GpuCategory::norm: return "norm";
    case GpuCategory::router: return "router";
    case GpuCategory::expert: return "expert";
    case GpuCategory::copy_h2d: return "copy_h2d";
    case GpuCategory::copy_d2h: return "copy_d2h";
    case GpuCategory::copy_other: return "copy_other";
    case GpuCategory::memset: return "memset";
    case GpuCategory::other: return "other";
  }
  return "?";
}

const std::vector<KernelCategoryRule>& default_kernel_rules() {
  // Expert kernels first (moe_gate_up_kernel is expert work, not the gate), then the
  // router (its softmax/top-k would otherwise look like attention), attention, norms
  // and other matrix work (cuBLAS on Hopper names kernels nvjet_*). The moebench
  // kernel names are those of engine/cuda/*.cu; the profile-check results list the
  // kernels seen with their categories.
  static const std::vector<KernelCategoryRule> rules = {
      {"moe_gate_up", GpuCategory::expert},    {"moe_down", GpuCategory::expert},
      {"moe_up", GpuCategory::expert},         {"expert", GpuCategory::expert},
      {"gate_up_kernel", GpuCategory::expert}, {"silu_mul", GpuCategory::expert},
      {"swiglu", GpuCategory::expert},         {"combine_", GpuCategory::expert},
      {"gather_kernel", GpuCategory::expert},  {"sort_kernel", GpuCategory::expert},
      {"select_kernel", GpuCategory::expert},  {"router", GpuCategory::router},
      {"moe_gate", GpuCategory::router},       {"gating", GpuCategory::router},
      {"topk", GpuCategory::router},           {"top_k", GpuCategory::router},
      {"attention", GpuCategory::attention},   {"attn", GpuCategory::attention},
      {"flash", GpuCategory::attention},       {"rope", GpuCategory::attention},
      {"rotary", GpuCategory::attention},      {"kv_cache", GpuCategory::attention},
      {"kvcache", GpuCategory::attention},     {"kv_store", GpuCategory::attention},
      {"softmax", GpuCategory::attention},     {"rmsnorm", GpuCategory::norm},
      {"rms_norm", GpuCategory::norm},         {"layernorm", GpuCategory::norm},
      {"layer_norm", GpuCategory::norm},       {"gemv", GpuCategory::gemv_gemm},
      {"gemm", GpuCategory::gemv_gemm},        {"matmul", GpuCategory::gemv_gemm},
      {"cutlass", GpuCategory::gemv_gemm},     {"xmma", GpuCategory::gemv_gemm},
      {"nvjet", GpuCategory::gemv_gemm},       {"cublas", GpuCategory::gemv_gemm},
      {"linear", GpuCategory::gemv_gemm},
  };
  return rules;
}

std::optional<GpuCategory> categorize(const GpuEvent& e, const std::vector<KernelCategoryRule>& rules) {
  switch (e.kind) {
    case GpuEventKind::runtime_api:
    case GpuEventKind::driver_api: return std::nullopt;
    case GpuEventKind::memset: return GpuCategory::memset;
    case GpuEventKind::memcpy:
      if (e.copy_kind == CopyKind::h2d) return GpuCategory::copy_h2d;
      if (e.copy_kind == CopyKind::d2h) return GpuCategory::copy_d2h;
      return GpuCategory::copy_other;
    case GpuEventKind::kernel: break;
  }
  std::string lower = e.name;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const auto& r : rules)
    if (lower.find(r.pattern) != std::string::npos) return r.category;
  return GpuCategory::other;
}

int64_t GpuTimeByCategory::total_ns() const {
  int64_t t = 0;
  for (int64_t v : ns) t += v;
  return t;
}

GpuTimeByCategory aggregate_gpu_time(const std::vector<GpuEvent>& events,
                                     const std::vector<KernelCategoryRule>& rules, int64_t from_ns,
                                     int64_t to_ns) {
  GpuTimeByCategory out;
  for (const auto& e : events) {
    if (e.start_ns < from_ns || e.start_ns >= to_ns) continue;
    const auto c = categorize(e, rules);
    if (!c) continue;
    out.ns[static_cast<size_t>(*c)] += e.end_ns - e.start_ns;
    out.count[static_cast<size_t>(*c)] += 1;
  }
  return out;
}

int64_t gpu_busy_ns(const std::vector<GpuEvent>& events, int64_t from_ns, int64_t to_ns) {
  std::vector<std::pair<int64_t, int64_t>> iv;  // (n_device_events) clipped [start, end)
  for (const auto& e : events) {
    if (e.kind == GpuEventKind::runtime_api || e.kind == GpuEventKind::driver_api) continue;
    const int64_t a = std::max(e.start_ns, from_ns), b = std::min(e.end_ns, to_ns);
    if (b > a) iv.emplace_back(a, b);
  }
  std::sort(iv.begin(), iv.end());
  int64_t busy = 0, cur_a = 0, cur_b = 0;
  bool open = false;
  for (const auto& [a, b] : iv) {
    if (open && a <= cur_b) {
      cur_b = std::max(cur_b, b);
      continue;
    }
    if (open) busy += cur_b - cur_a;
    cur_a = a;
    cur_b = b;
    open = true;
  }
  if (open) busy += cur_b - cur_a;
  return busy;
}

std::string demangle(const char* name) {
  if (name == nullptr) return "?";
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  if (status != 0 || d == nullptr) return name;
  std::string out(d);
  std::free(d);
  return out;
}

// ---- the one place CUPTI record structs are read ----

#ifdef MOEBENCH_HAVE_CUDA

static CopyKind copy_kind_from_cupti(uint8_t k) {
  switch (k) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD:
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOA: return CopyKind::h2d;
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH:
    case CUPTI_ACTIVITY_MEMCPY_KIND_ATOH: return CopyKind::d2h;
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD:
    case CUPTI_ACTIVITY_MEMCPY_KIND_ATOA:
    case CUPTI_ACTIVITY_MEMCPY_KIND_ATOD:
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOA: return CopyKind::d2d;
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOH: return CopyKind::h2h;
    case CUPTI_ACTIVITY_MEMCPY_KIND_PTOP: return CopyKind::p2p;
    default: return CopyKind::other;
  }
}

static std::string api_name(CUpti_CallbackDomain domain, CUpti_CallbackId cbid) {
  const char* n = nullptr;
  if (cuptiGetCallbackName(domain, cbid, &n) != CUPTI_SUCCESS || n == nullptr)
    return (domain == CUPTI_CB_DOMAIN_RUNTIME_API ? "runtime cbid " : "driver cbid ") + std::to_string(cbid);
  std::string s(n);
  // "cudaLaunchKernel_v7000" -> "cudaLaunchKernel"
  const auto v = s.rfind("_v");
  if (v != std::string::npos && v + 2 < s.size() &&
      std::all_of(s.begin() + static_cast<long>(v) + 2, s.end(), [](unsigned char c) { return std::isdigit(c); }))
    s.resize(v);
  return s;
}

std::optional<GpuEvent> translate_cupti_record(const void* record) {
  const auto* r = static_cast<const CUpti_Activity*>(record);
  GpuEvent e;
  switch (r->kind) {
    case CUPTI_ACTIVITY_KIND_KERNEL:
    case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
      const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(r);
      e.kind = GpuEventKind::kernel;
      e.name = k->name != nullptr ? k->name : "?";
      e.start_ns = static_cast<int64_t>(k->start);
      e.end_ns = static_cast<int64_t>(k->end);
      e.device_id = k->deviceId;
      e.stream_id = k->streamId;
      e.correlation_id = k->correlationId;
      return e;
    }
    case CUPTI_ACTIVITY_KIND_MEMCPY: {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(r);
      e.kind = GpuEventKind::memcpy;
      e.copy_kind = copy_kind_from_cupti(m->copyKind);
      e.name = std::string("memcpy ") + copy_kind_name(e.copy_kind);
      e.start_ns = static_cast<int64_t>(m->start);
      e.end_ns = static_cast<int64_t>(m->end);
      e.device_id = m->deviceId;
      e.stream_id = m->streamId;
      e.correlation_id = m->correlationId;
      e.bytes = static_cast<int64_t>(m->bytes);
      return e;
    }
    case CUPTI_ACTIVITY_KIND_MEMSET: {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(r);
      e.kind = GpuEventKind::memset;
      e.name = "memset";
      e.start_ns = static_cast<int64_t>(m->start);
      e.end_ns = static_cast<int64_t>(m->end);
      e.device_id = m->deviceId;
      e.stream_id = m->streamId;
      e.correlation_id = m->correlationId;
      e.bytes = static_cast<int64_t>(m->bytes);
      return e;
    }
    case CUPTI_ACTIVITY_KIND_RUNTIME:
    case CUPTI_ACTIVITY_KIND_DRIVER: {
      const auto* a = reinterpret_cast<const CUpti_ActivityAPI*>(r);
      const bool runtime = r->kind == CUPTI_ACTIVITY_KIND_RUNTIME;
      e.kind = runtime ? GpuEventKind::runtime_api : GpuEventKind::driver_api;
      e.name = api_name(runtime ? CUPTI_CB_DOMAIN_RUNTIME_API : CUPTI_CB_DOMAIN_DRIVER_API, a->cbid);
      e.start_ns = static_cast<int64_t>(a->start);
      e.end_ns = static_cast<int64_t>(a->end);
      e.correlation_id = a->correlationId;
      e.thread_id = a->threadId;
      return e;
    }
    default: return std::nullopt;
  }
}

#else

std::optional<GpuEvent> translate_cupti_record(const void*) { return std::nullopt; }

#endif

// ---- the collector ----

struct CuptiCollector::State {
  CuptiOptions options;
  std::string reason = "not enabled";
  bool enabled = false;
  std::mutex mu;                 // guards everything below
  std::vector<GpuEvent> events;  // (n_events) completion order
  std::unordered_map<std::string, std::string> demangled;  // mangled -> demangled
  int64_t dropped = 0;
  int64_t seen = 0;
  int64_t ts_offset_ns = 0;  // added to CUPTI timestamps if our clock was not registered
  std::string clock_source;

  // Called with mu held.
  void add(GpuEvent e) {
    ++seen;
    if (e.kind == GpuEventKind::kernel) {
      auto it = demangled.find(e.name);
      if (it == demangled.end()) it = demangled.emplace(e.name, demangle(e.name.c_str())).first;
      e.name = it->second;
    }
    e.start_ns += ts_offset_ns;
    e.end_ns += ts_offset_ns;
    events.push_back(std::move(e));
  }
};

CuptiCollector::CuptiCollector(CuptiOptions options) : state_(std::make_unique<State>()) {
  state_->options = options;
}

CuptiCollector::~CuptiCollector() { disable(); }

bool CuptiCollector::enabled() const { return state_->enabled; }
const std::string& CuptiCollector::unavailable_reason() const { return state_->reason; }

std::vector<GpuEvent> CuptiCollector::take_events() {
  std::lock_guard<std::mutex> lock(state_->mu);
  std::vector<GpuEvent> out;
  out.swap(state_->events);
  return out;
}

int64_t CuptiCollector::dropped_records() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->dropped;
}

const std::string& CuptiCollector::clock_source() const { return state_->clock_source; }

int64_t CuptiCollector::records_seen() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->seen;
}

#ifdef MOEBENCH_HAVE_CUDA

namespace {

// CUPTI's callbacks are C functions; this is the enabled collector they feed.
std::mutex g_active_mu;
CuptiCollector::State* g_active = nullptr;

std::string cupti_error(CUptiResult r) {
  const char* s = nullptr;
  if (cuptiGetResultString(r, &s) != CUPTI_SUCCESS || s == nullptr) return "CUPTI error " + std::to_string(r);
  return s;
}

uint64_t CUPTIAPI profiler_timestamp() { return static_cast<uint64_t>(now_ns()); }

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  size_t bytes = 8u << 20;
  {
    std::lock_guard<std::mutex> lock(g_active_mu);
    if (g_active != nullptr) bytes = g_active->options.buffer_bytes;
  }
  // CUPTI wants 8-byte alignment; aligned_alloc needs a multiple of it.
  bytes = (bytes + 7) / 8 * 8;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, bytes));
  *size = *buffer != nullptr ? bytes : 0;
  *max_records = 0;  // as many as fit
}

void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream_id, uint8_t* buffer, size_t, size_t valid) {
  std::lock_guard<std::mutex> lock(g_active_mu);
  CUpti_Activity* rec = nullptr;
  if (g_active != nullptr) {
    std::lock_guard<std::mutex> state_lock(g_active->mu);
    while (cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
      if (auto e = translate_cupti_record(rec)) g_active->add(std::move(*e));
    }
    size_t dropped = 0;
    if (cuptiActivityGetNumDroppedRecords(ctx, stream_id, &dropped) == CUPTI_SUCCESS && dropped > 0) {
      g_active->dropped += static_cast<int64_t>(dropped);
      log::warn("CUPTI dropped {} activity records (buffer {} bytes): GPU time and the trace are incomplete",
                dropped, g_active->options.buffer_bytes);
    }
  }
  std::free(buffer);
}

std::vector<CUpti_ActivityKind> kinds_for(const CuptiOptions& o) {
  std::vector<CUpti_ActivityKind> k = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY,
                                       CUPTI_ACTIVITY_KIND_MEMSET};
  if (o.runtime_api) k.push_back(CUPTI_ACTIVITY_KIND_RUNTIME);
  if (o.driver_api) k.push_back(CUPTI_ACTIVITY_KIND_DRIVER);
  return k;
}

}  // namespace

bool CuptiCollector::enable() {
  State& s = *state_;
  if (s.enabled) return true;
  {
    std::lock_guard<std::mutex> lock(g_active_mu);
    if (g_active != nullptr) {
      s.reason = "another CUPTI collector is already enabled in this process";
      return false;
    }
  }
  int n_devices = 0;
  const cudaError_t ce = cudaGetDeviceCount(&n_devices);
  if (ce != cudaSuccess || n_devices == 0) {
    s.reason = ce != cudaSuccess ? std::string("no CUDA device (cudaGetDeviceCount: ") + cudaGetErrorString(ce) + ")"
                                 : std::string("no CUDA device (cudaGetDeviceCount returned 0)");
    (void)cudaGetLastError();
    return false;
  }
  // Our clock for every record, so GPU and CPU events share one time axis.
  // Where CUPTI refuses, fall back to a fixed offset measured now.
  if (cuptiActivityRegisterTimestampCallback(profiler_timestamp) == CUPTI_SUCCESS) {
    s.ts_offset_ns = 0;
    s.clock_source = "profiler clock (CUPTI timestamp callback)";
  } else {
    uint64_t t = 0;
    cuptiGetTimestamp(&t);
    s.ts_offset_ns = now_ns() - static_cast<int64_t>(t);
    s.clock_source = "CUPTI clock + offset measured at enable()";
  }
  CUptiResult r = cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed);
  if (r != CUPTI_SUCCESS) {
    s.reason = "cuptiActivityRegisterCallbacks: " + cupti_error(r);
    return false;
  }
  {
    std::lock_guard<std::mutex> lock(g_active_mu);
    g_active = &s;
  }
  const auto kinds = kinds_for(s.options);
  for (size_t i = 0; i < kinds.size(); ++i) {
    r = cuptiActivityEnable(kinds[i]);
    if (r != CUPTI_SUCCESS) {
      s.reason = "cuptiActivityEnable(kind " + std::to_string(kinds[i]) + "): " + cupti_error(r);
      for (size_t j = 0; j < i; ++j) cuptiActivityDisable(kinds[j]);
      std::lock_guard<std::mutex> lock(g_active_mu);
      g_active = nullptr;
      return false;
    }
  }
  s.enabled = true;
  s.reason.clear();
  return true;
}

void CuptiCollector::flush() {
  if (!state_->enabled) return;
  // Completion callbacks run inside this call; no lock may be held here.
  cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  size_t dropped = 0;
  if (cuptiActivityGetNumDroppedRecords(nullptr, 0, &dropped) == CUPTI_SUCCESS && dropped > 0) {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->dropped += static_cast<int64_t>(dropped);
    log::warn("CUPTI dropped {} activity records: GPU time and the trace are incomplete", dropped);
  }
}

void CuptiCollector::disable() {
  State& s = *state_;
  if (!s.enabled) return;
  flush();
  for (auto k : kinds_for(s.options)) cuptiActivityDisable(k);
  cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  std::lock_guard<std::mutex> lock(g_active_mu);
  g_active = nullptr;
  s.enabled = false;
  s.reason = "disabled";
}

#else

bool CuptiCollector::enable() {
  state_->reason = "built without CUDA (MOEBENCH_CUDA=OFF): CUPTI is not available";
  return false;
}
void CuptiCollector::flush() {}
void CuptiCollector::disable() {}

#endif

}  // namespace moebench::profiler
