// routing_trace.cpp: see routing_trace.h.
#include "variants/routing_trace.h"

#include <algorithm>
#include <bitset>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "common/atomic_file.h"
#include "model/config.h"

namespace moebench {

using nlohmann::json;

int64_t RoutingTrace::n_tokens() const {
  int64_t n = 0;
  for (const auto& s : steps) n += s.n_tokens;
  return n;
}

std::span<const int32_t> RoutingTrace::ids(int step, int layer) const {
  const RoutingStep& s = steps.at(step);
  size_t per_layer = static_cast<size_t>(s.n_tokens) * top_k;
  return {s.ids.data() + per_layer * layer, per_layer};
}

std::span<const float> RoutingTrace::weights(int step, int layer) const {
  const RoutingStep& s = steps.at(step);
  if (s.weights.empty()) return {};
  size_t per_layer = static_cast<size_t>(s.n_tokens) * top_k;
  return {s.weights.data() + per_layer * layer, per_layer};
}

RoutingStep& RoutingTrace::add_step(int n_tokens, bool with_weights) {
  RoutingStep& s = steps.emplace_back();
  s.n_tokens = n_tokens;
  size_t n = static_cast<size_t>(n_layers) * n_tokens * top_k;
  s.ids.assign(n, 0);
  if (with_weights) s.weights.assign(n, 0.0f);
  return s;
}

std::vector<int64_t> RoutingTrace::usage_counts() const {
  std::vector<int64_t> c(static_cast<size_t>(n_layers) * n_experts, 0);
  for (const auto& s : steps) {
    size_t per_layer = static_cast<size_t>(s.n_tokens) * top_k;
    for (int l = 0; l < n_layers; ++l)
      for (size_t i = 0; i < per_layer; ++i) ++c[static_cast<size_t>(l) * n_experts + s.ids[l * per_layer + i]];
  }
  return c;
}

void validate_trace(const RoutingTrace& t, const std::string& where) {
  if (t.n_layers <= 0 || t.n_layers > kMaxLayers)
    fail("{}: field 'layers' is {}, expected an integer in [1, {}]", where, t.n_layers, kMaxLayers);
  if (t.n_experts <= 0 || t.n_experts > kMaxExperts)
    fail("{}: field 'experts' is {}, expected an integer in [1, {}]", where, t.n_experts, kMaxExperts);
  if (t.top_k <= 0 || t.top_k > t.n_experts)
    fail("{}: field 'top_k' is {}, expected an integer in [1, experts={}]", where, t.top_k, t.n_experts);
  for (size_t si = 0; si < t.steps.size(); ++si) {
    const RoutingStep& s = t.steps[si];
    if (s.n_tokens <= 0) fail("{}: steps[{}].n_tokens is {}, expected a positive integer", where, si, s.n_tokens);
    size_t want = static_cast<size_t>(t.n_layers) * s.n_tokens * t.top_k;
    if (s.ids.size() != want)
      fail("{}: steps[{}].ids has {} values, expected {} (layers {} x n_tokens {} x top_k {})", where, si,
           s.ids.size(), want, t.n_layers, s.n_tokens, t.top_k);
    if (!s.weights.empty() && s.weights.size() != want)
      fail("{}: steps[{}].weights has {} values, expected {} (same as ids) or none", where, si, s.weights.size(), want);
    for (size_t i = 0; i < s.ids.size(); ++i) {
      if (s.ids[i] < 0 || s.ids[i] >= t.n_experts)
        fail("{}: steps[{}].ids[{}] is {}, expected an expert id in [0, {})", where, si, i, s.ids[i], t.n_experts);
    }
    // The top-k of one token are distinct experts (one pass a token: ids are < kMaxExperts).
    for (size_t tok = 0; tok < want / t.top_k; ++tok) {
      const int32_t* p = s.ids.data() + tok * t.top_k;
      std::bitset<kMaxExperts> seen;
      for (int b = 0; b < t.top_k; ++b) {
        if (seen.test(static_cast<size_t>(p[b])))
          fail("{}: steps[{}].ids[{}] repeats expert {} within one token's top-{}, expected distinct ids", where, si,
               tok * t.top_k + b, p[b], t.top_k);
        seen.set(static_cast<size_t>(p[b]));
      }
    }
  }
}

std::string trace_to_json_text(const RoutingTrace& t) {
  // Hand-formatted: header fields, then one step per line (compact, diffable).
  std::string out;
  out += fmt::format("{{\"format\": \"{}\", \"version\": {},\n", kRoutingTraceFormat, kRoutingTraceVersion);
  out += fmt::format(" \"layers\": {}, \"experts\": {}, \"top_k\": {},\n", t.n_layers, t.n_experts, t.top_k);
  out += fmt::format(" \"source\": {},\n", json(t.source).dump());
  out += " \"steps\": [";
  for (size_t si = 0; si < t.steps.size(); ++si) {
    const RoutingStep& s = t.steps[si];
    out += si ? ",\n  " : "\n  ";
    out += fmt::format("{{\"n_tokens\": {}, \"ids\": [{}]", s.n_tokens, fmt::join(s.ids, ","));
    if (!s.weights.empty()) {
      out += ", \"weights\": [";
      for (size_t i = 0; i < s.weights.size(); ++i) {
        if (i) out += ',';
        out += fmt::format("{:.6g}", s.weights[i]);
      }
      out += "]";
    }
    out += "}";
  }
  out += "\n]}\n";
  return out;
}

void save_trace(const RoutingTrace& t, const std::string& path) {
  validate_trace(t, path);
  write_file_atomic(path, trace_to_json_text(t));
}

namespace {

int get_int(const json& j, const char* key, const std::string& where, int64_t lo, int64_t hi) {
  auto it = j.find(key);
  if (it == j.end()) fail("{}: missing field '{}' (expected an integer in [{}, {}])", where, key, lo, hi);
  if (!it->is_number_integer()) fail("{}: field '{}' is {}, expected an integer", where, key, it->dump());
  int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) fail("{}: field '{}' is {}, expected an integer in [{}, {}]", where, key, v, lo, hi);
  return static_cast<int>(v);
}

}  // namespace

RoutingTrace trace_from_json_text(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e999
    fail("{}: not valid JSON ({})", where, e.what());
  }
  if (!j.is_object()) fail("{}: top level is {}, expected a JSON object", where, j.type_name());
  auto fmt_it = j.find("format");
  if (fmt_it == j.end() || !fmt_it->is_string() || fmt_it->get<std::string>() != kRoutingTraceFormat)
    fail("{}: field 'format' is {}, expected \"{}\"", where, fmt_it == j.end() ? "missing" : fmt_it->dump(),
         kRoutingTraceFormat);
  auto ver = j.find("version");
  if (ver == j.end() || !ver->is_number_integer() || ver->get<int64_t>() != kRoutingTraceVersion)
    fail("{}: field 'version' is {}, expected {}", where, ver == j.end() ? "missing" : ver->dump(),
         kRoutingTraceVersion);
  RoutingTrace t;
  t.n_layers = get_int(j, "layers", where, 1, kMaxLayers);
  t.n_experts = get_int(j, "experts", where, 1, kMaxExperts);
  t.top_k = get_int(j, "top_k", where, 1, t.n_experts);
  auto src = j.find("source");
  if (src == j.end() || !src->is_string()) fail("{}: field 'source' is {}, expected a string", where,
                                                 src == j.end() ? "missing" : src->dump());
  t.source = src->get<std::string>();
  auto steps = j.find("steps");
  if (steps == j.end() || !steps->is_array()) fail("{}: field 'steps' is {}, expected an array", where,
                                                    steps == j.end() ? "missing" : steps->type_name());
  t.steps.reserve(steps->size());
  for (size_t si = 0; si < steps->size(); ++si) {
    const json& sj = (*steps)[si];
    std::string sw = fmt::format("{}: steps[{}]", where, si);
    if (!sj.is_object()) fail("{} is {}, expected an object", sw, sj.type_name());
    RoutingStep s;
    s.n_tokens = get_int(sj, "n_tokens", sw, 1, 1 << 24);
    auto ids = sj.find("ids");
    if (ids == sj.end() || !ids->is_array()) fail("{}: field 'ids' is {}, expected an array of integers", sw,
                                                  ids == sj.end() ? "missing" : ids->type_name());
    s.ids.reserve(ids->size());
    for (size_t i = 0; i < ids->size(); ++i) {
      const json& v = (*ids)[i];
      if (!v.is_number_integer()) fail("{}.ids[{}] is {}, expected an integer expert id", sw, i, v.dump());
      int64_t x = v.get<int64_t>();
      if (x < 0 || x >= t.n_experts) fail("{}.ids[{}] is {}, expected an expert id in [0, {})", sw, i, x, t.n_experts);
      s.ids.push_back(static_cast<int32_t>(x));
    }
    auto w = sj.find("weights");
    if (w != sj.end()) {
      if (!w->is_array()) fail("{}: field 'weights' is {}, expected an array of numbers", sw, w->type_name());
      s.weights.reserve(w->size());
      for (size_t i = 0; i < w->size(); ++i) {
        const json& v = (*w)[i];
        if (!v.is_number() || !(std::fabs(v.get<double>()) <= std::numeric_limits<float>::max()))
          fail("{}.weights[{}] is {}, expected a number a float holds", sw, i, v.dump());
        s.weights.push_back(v.get<float>());
      }
    }
    t.steps.push_back(std::move(s));
  }
  validate_trace(t, where);
  return t;
}

RoutingTrace load_trace(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open routing trace ({})", path, std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return trace_from_json_text(ss.str(), path);
}

std::vector<LayerRoutingStats> measure_routing(const RoutingTrace& t) {
  std::vector<LayerRoutingStats> out(t.n_layers);
  const int k = t.top_k;
  for (int l = 0; l < t.n_layers; ++l) {
    std::vector<int64_t> count(t.n_experts, 0);
    int64_t pairs = 0, repeats = 0, overlaps = 0, routings = 0;
    const int32_t* prev = nullptr;
    for (int si = 0; si < t.n_steps(); ++si) {
      auto ids = t.ids(si, l);
      for (int tok = 0; tok < t.steps[si].n_tokens; ++tok) {
        const int32_t* cur = ids.data() + static_cast<size_t>(tok) * k;
        for (int a = 0; a < k; ++a) ++count[cur[a]];
        routings += k;
        if (prev) {
          ++pairs;
          if (cur[0] == prev[0]) ++repeats;
          bool any = false;
          for (int a = 0; a < k && !any; ++a)
            for (int b = 0; b < k; ++b)
              if (cur[a] == prev[b]) {
                any = true;
                break;
              }
          if (any) ++overlaps;
        }
        prev = cur;
      }
    }
    LayerRoutingStats& st = out[l];
    if (pairs) {
      st.first_repeat = static_cast<double>(repeats) / pairs;
      st.topk_overlap = static_cast<double>(overlaps) / pairs;
    }
    if (routings) {
      st.top_share = static_cast<double>(*std::max_element(count.begin(), count.end())) / routings;
      st.least_share = static_cast<double>(*std::min_element(count.begin(), count.end())) / routings;
    }
  }
  return out;
}

}  // namespace moebench
