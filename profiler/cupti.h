// cupti.h: opt-in GPU activity collection through the CUPTI Activity API, and
// the GPU-time-by-category aggregation.
//
// The collector enables CONCURRENT_KERNEL, MEMCPY, MEMSET and RUNTIME (for the
// CPU→GPU correlation), hands CUPTI buffers, translates every completed record
// into a plain GpuEvent and checks dropped records. CUPTI's record structs
// (CUpti_ActivityKernel10, CUpti_ActivityMemcpy6, ...) change between CUDA
// releases; they are read in exactly one place, translate_cupti_record() in
// cupti.cpp. Timestamps are on the profiler clock (clock.h): CUPTI is given our
// clock through cuptiActivityRegisterTimestampCallback.
//
// Without CUDA, or without a device, enable() returns false and
// unavailable_reason() says why; nothing else changes.
#pragma once
#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace moebench::profiler {

enum class GpuEventKind : uint8_t { kernel, memcpy, memset, runtime_api, driver_api };
enum class CopyKind : uint8_t { none, h2d, d2h, d2d, h2h, p2p, other };

const char* gpu_event_kind_name(GpuEventKind k);
const char* copy_kind_name(CopyKind k);  // "H2D", "D2H", ...

// One CUPTI activity record in our own terms.
struct GpuEvent {
  GpuEventKind kind = GpuEventKind::kernel;
  std::string name;             // demangled kernel name; "memcpy H2D"; "memset"; runtime function
  int64_t start_ns = 0;         // profiler clock
  int64_t end_ns = 0;
  uint32_t device_id = 0;
  uint32_t stream_id = 0;       // kernels, copies, memsets
  uint32_t correlation_id = 0;  // links a launch/copy to the API call that issued it
  uint32_t thread_id = 0;       // API records: the calling CPU thread (CUPTI's id)
  int64_t bytes = 0;            // copies and memsets
  CopyKind copy_kind = CopyKind::none;
};

// GPU time is split into these categories; kernels by name patterns. `expert` is
// the MoE block past the router: expert FFN kernels (fused or not) and their
// dispatch / combine; `gemv_gemm` the other matrix work (attention projections,
// lm_head, cuBLAS, and experts run through the generic linear kernels).
enum class GpuCategory : uint8_t { gemv_gemm, attention, norm, router, expert, copy_h2d, copy_d2h, copy_other, memset, other };
inline constexpr int kGpuCategoryCount = 10;
const char* gpu_category_name(GpuCategory c);

// A kernel whose lowercased demangled name contains `pattern` is `category`;
// rules are tried in order, the first match wins, no match is `other`.
struct KernelCategoryRule {
  std::string pattern;
  GpuCategory category;
};
const std::vector<KernelCategoryRule>& default_kernel_rules();

// nullopt for API records (they are CPU time, not GPU time).
std::optional<GpuCategory> categorize(const GpuEvent& e,
                                      const std::vector<KernelCategoryRule>& rules = default_kernel_rules());

struct GpuTimeByCategory {
  std::array<int64_t, kGpuCategoryCount> ns{};     // summed durations
  std::array<int64_t, kGpuCategoryCount> count{};  // events
  int64_t total_ns() const;
  int64_t of(GpuCategory c) const { return ns[static_cast<size_t>(c)]; }
};

// Sums device activity (kernels, copies, memsets) whose start lies in
// [from_ns, to_ns). Overlapping events (copy stream vs compute stream) are
// each counted in full; gpu_busy_ns gives the union instead.
GpuTimeByCategory aggregate_gpu_time(const std::vector<GpuEvent>& events,
                                     const std::vector<KernelCategoryRule>& rules = default_kernel_rules(),
                                     int64_t from_ns = std::numeric_limits<int64_t>::min(),
                                     int64_t to_ns = std::numeric_limits<int64_t>::max());
// Length of the union of device-activity intervals clipped to [from_ns, to_ns).
int64_t gpu_busy_ns(const std::vector<GpuEvent>& events, int64_t from_ns, int64_t to_ns);

// The one adapter from CUPTI record structs (a CUpti_Activity* from
// cuptiActivityGetNextRecord) to GpuEvent. Kinds we do not use, and every
// record without CUDA, give nullopt. Names are copied as CUPTI gives them
// (kernel names mangled); the collector demangles.
std::optional<GpuEvent> translate_cupti_record(const void* record);

// "_Z6kernelPf" -> "kernel(float*)"; returns the input when it is not mangled.
std::string demangle(const char* name);

struct CuptiOptions {
  size_t buffer_bytes = 8u << 20;  // per CUPTI buffer; CUPTI asks for more as they fill
  bool runtime_api = true;         // RUNTIME records: CPU side of each launch, for flow events
  // DRIVER records: launches that bypass the runtime. On the H200 (2026-11-28) cuBLASLt's
  // nvjet kernels (the prefill's GEMMs) came without a runtime record, so without these
  // they have no flow arrow in the trace; off by default (doubles the API records).
  bool driver_api = false;
};

// At most one collector is enabled per process: CUPTI's buffer callbacks are
// plain C functions, so the enabled collector is the one process-wide pointer
// they reach. enable() of a second collector fails with a reason.
class CuptiCollector {
 public:
  explicit CuptiCollector(CuptiOptions options = {});
  ~CuptiCollector();  // disables
  CuptiCollector(const CuptiCollector&) = delete;
  CuptiCollector& operator=(const CuptiCollector&) = delete;

  // Starts collection. False (and unavailable_reason()) when CUDA is not built
  // in, no device is present, or CUPTI refuses; the program carries on.
  bool enable();
  bool enabled() const;
  const std::string& unavailable_reason() const;
  // Forces CUPTI to hand over every buffer, complete or not (call after a
  // device synchronize, e.g. at the end of a repetition).
  void flush();
  // Flushes and stops collection.
  void disable();

  // Events collected so far, in completion order; clears them.
  std::vector<GpuEvent> take_events();
  // Records CUPTI dropped for lack of buffer space (summed over all buffers).
  int64_t dropped_records() const;
  // Records seen and translated, including kinds later filtered out.
  int64_t records_seen() const;
  // How record timestamps reach the profiler clock: "profiler clock (CUPTI timestamp
  // callback)" or "CUPTI clock + offset measured at enable()"; "" before enable().
  const std::string& clock_source() const;

  struct State;  // shared with the C callbacks in cupti.cpp

 private:
  std::unique_ptr<State> state_;
};

}  // namespace moebench::profiler
