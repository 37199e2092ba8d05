// kernel_table.cpp: see kernel_table.h.
#include "suites/kernel_table.h"

#include <algorithm>
#include <map>

namespace moebench::suites {

std::string short_kernel_name(const std::string& demangled) {
  std::string n = demangled;
  for (const std::string cut : {"(anonymous namespace)::", "void ", "moebench::cuda::"})
    for (size_t at; (at = n.find(cut)) != std::string::npos;) n.erase(at, cut.size());
  return n.substr(0, std::min(n.find('('), n.find('<')));
}

nlohmann::json kernel_table(const std::vector<profiler::GpuEvent>& events, int64_t t0_ns, int64_t t1_ns, int steps,
                            size_t top) {
  struct Row {
    int64_t ns = 0, exposed = 0, count = 0;
    std::string category;
  };
  std::vector<const profiler::GpuEvent*> in;
  for (const profiler::GpuEvent& e : events) {
    if (e.start_ns < t0_ns || e.start_ns >= t1_ns) continue;
    if (e.kind == profiler::GpuEventKind::runtime_api || e.kind == profiler::GpuEventKind::driver_api) continue;
    in.push_back(&e);
  }
  // Every instant where device work runs belongs to the record running then that started
  // first: in a chain whose kernels start early and wait for the one before (programmatic
  // launch), the one being waited on. Taken in the order they start, a record then owns
  // its time past the latest end of the records started before it (its exposed time); the
  // device idles wherever a record starts past that end. Exposed + idle is the span.
  std::stable_sort(in.begin(), in.end(), [](const profiler::GpuEvent* a, const profiler::GpuEvent* b) {
    return a->start_ns != b->start_ns ? a->start_ns < b->start_ns : a->end_ns > b->end_ns;
  });
  std::map<std::string, Row> by;
  int64_t total_ns = 0, idle_ns = 0, span_ns = 0;
  if (!in.empty()) {
    int64_t frontier = in.front()->start_ns;  // the latest end so far
    const int64_t first = frontier;
    for (const profiler::GpuEvent* e : in) {
      Row& r = by[short_kernel_name(e->name)];
      r.ns += e->end_ns - e->start_ns;
      r.count += 1;
      if (r.category.empty())
        if (auto c = profiler::categorize(*e)) r.category = profiler::gpu_category_name(*c);
      total_ns += e->end_ns - e->start_ns;
      if (e->start_ns > frontier) idle_ns += e->start_ns - frontier;
      r.exposed += std::max<int64_t>(0, e->end_ns - std::max(frontier, e->start_ns));
      frontier = std::max(frontier, e->end_ns);
    }
    span_ns = frontier - first;
  }
  std::vector<std::pair<std::string, Row>> rows(by.begin(), by.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ns > b.second.ns; });
  if (top > 0 && rows.size() > top) rows.resize(top);
  const double n = std::max(steps, 1);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [name, r] : rows)
    out.push_back({{"kernel", name}, {"category", r.category}, {"ns_per_step", static_cast<double>(r.ns) / n},
                   {"exposed_ns_per_step", static_cast<double>(r.exposed) / n},
                   {"launches_per_step", static_cast<double>(r.count) / n},
                   {"share", total_ns > 0 ? static_cast<double>(r.ns) / static_cast<double>(total_ns) : 0.0}});
  return {{"decode_steps", steps},
          {"gpu_ns_per_step", static_cast<double>(total_ns) / n},
          {"span_ns_per_step", static_cast<double>(span_ns) / n},
          {"idle_ns_per_step", static_cast<double>(idle_ns) / n},
          {"kernels", out}};
}

}  // namespace moebench::suites
