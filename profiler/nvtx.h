// nvtx.h: NVTX3 ranges in the `moebench` domain, one named category and colour
// per kind of work, so Nsight Systems groups and colours them. Without CUDA
// (MOEBENCH_HAVE_CUDA undefined) NvtxRange is an empty object and compiles to
// nothing. With CUDA and no tool attached, NVTX calls are a pointer check.
//
//   { NvtxRange r(RangeKind::attention, layer); ...launch attention... }
//
// The payload is an int64 shown by Nsight next to the range: the layer index
// for layer/attention/router/combine, the expert index for expert load/compute
// (those nest inside their layer range, which names the layer).
#pragma once
#include <cstdint>

#ifdef MOEBENCH_HAVE_CUDA
#include <nvtx3/nvtx3.hpp>
#endif

namespace moebench::profiler {

enum class RangeKind : uint8_t {
  token,           // one prefill or decode step (whole forward + sampling)
  layer,           // one decoder layer
  attention,       // norm + qkv + rope + attention + o_proj
  router,          // gate logits, softmax, top-k
  expert_load,     // issuing / waiting for an expert's weights
  expert_compute,  // one expert's SwiGLU MLP (or a grouped/fused dispatch)
  combine,         // weighted sum of expert outputs back into the residual
  other,           // anything else; give it a name
};
inline constexpr int kRangeKindCount = 8;

// Static, lowercase names; also the Chrome trace event names and categories.
inline const char* range_kind_name(RangeKind k) {
  switch (k) {
    case RangeKind::token: return "token";
    case RangeKind::layer: return "layer";
    case RangeKind::attention: return "attention";
    case RangeKind::router: return "router";
    case RangeKind::expert_load: return "expert_load";
    case RangeKind::expert_compute: return "expert_compute";
    case RangeKind::combine: return "combine";
    case RangeKind::other: return "other";
  }
  return "other";
}

// 0xRRGGBB, one colour per kind (Nsight shows them; the trace uses cname-free
// categories, since Perfetto colours by name).
inline uint32_t range_kind_color(RangeKind k) {
  switch (k) {
    case RangeKind::token: return 0x607d8b;
    case RangeKind::layer: return 0x9e9e9e;
    case RangeKind::attention: return 0x2196f3;
    case RangeKind::router: return 0xffc107;
    case RangeKind::expert_load: return 0xf44336;
    case RangeKind::expert_compute: return 0x4caf50;
    case RangeKind::combine: return 0x9c27b0;
    case RangeKind::other: return 0x795548;
  }
  return 0x795548;
}

#ifdef MOEBENCH_HAVE_CUDA

struct moebench_domain {
  static constexpr const char* name{"moebench"};
};

namespace detail {
// Category ids are 1 + the RangeKind value; each is named once per process.
inline const nvtx3::named_category_in<moebench_domain>& nvtx_category(RangeKind k) {
  static const nvtx3::named_category_in<moebench_domain> cats[kRangeKindCount] = {
      nvtx3::named_category_in<moebench_domain>{1, "token"},
      nvtx3::named_category_in<moebench_domain>{2, "layer"},
      nvtx3::named_category_in<moebench_domain>{3, "attention"},
      nvtx3::named_category_in<moebench_domain>{4, "router"},
      nvtx3::named_category_in<moebench_domain>{5, "expert_load"},
      nvtx3::named_category_in<moebench_domain>{6, "expert_compute"},
      nvtx3::named_category_in<moebench_domain>{7, "combine"},
      nvtx3::named_category_in<moebench_domain>{8, "other"},
  };
  return cats[static_cast<int>(k)];
}
inline const nvtx3::registered_string_in<moebench_domain>& nvtx_message(RangeKind k) {
  static const nvtx3::registered_string_in<moebench_domain> msgs[kRangeKindCount] = {
      nvtx3::registered_string_in<moebench_domain>{"token"},
      nvtx3::registered_string_in<moebench_domain>{"layer"},
      nvtx3::registered_string_in<moebench_domain>{"attention"},
      nvtx3::registered_string_in<moebench_domain>{"router"},
      nvtx3::registered_string_in<moebench_domain>{"expert_load"},
      nvtx3::registered_string_in<moebench_domain>{"expert_compute"},
      nvtx3::registered_string_in<moebench_domain>{"combine"},
      nvtx3::registered_string_in<moebench_domain>{"other"},
  };
  return msgs[static_cast<int>(k)];
}
inline nvtx3::event_attributes nvtx_attributes(RangeKind k, int64_t payload, const char* name) {
  const nvtx3::color c{nvtx3::rgb{static_cast<uint8_t>(range_kind_color(k) >> 16),
                                  static_cast<uint8_t>(range_kind_color(k) >> 8),
                                  static_cast<uint8_t>(range_kind_color(k))}};
  if (name != nullptr) return nvtx3::event_attributes{nvtx3::message{name}, c, nvtx_category(k), nvtx3::payload{payload}};
  return nvtx3::event_attributes{nvtx_message(k), c, nvtx_category(k), nvtx3::payload{payload}};
}
}  // namespace detail

// An NVTX push/pop range for the enclosing scope. `name` (optional) overrides
// the kind's name as the message; it must outlive the constructor call.
class NvtxRange {
 public:
  explicit NvtxRange(RangeKind k, int64_t payload = -1, const char* name = nullptr) noexcept
      : range_{detail::nvtx_attributes(k, payload, name)} {}
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;

 private:
  nvtx3::scoped_range_in<moebench_domain> range_;
};

#else

class NvtxRange {
 public:
  explicit NvtxRange(RangeKind, int64_t = -1, const char* = nullptr) noexcept {}
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

#endif

}  // namespace moebench::profiler
