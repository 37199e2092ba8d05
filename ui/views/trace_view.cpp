// trace_view.cpp: a timeline of a Chrome trace — CPU ranges, kernels, copies
// and counters, one row per nesting level of each track. Wheel zooms around the
// cursor, drag pans, "fit" shows everything; sub-pixel slices are merged by
// build_trace_frame so 100k-event traces stay fluid.
#include <fmt/format.h>
#include <imgui.h>

#include <algorithm>
#include <cmath>

#include "reports/series.h"
#include "ui/model/trace_model.h"
#include "ui/views/chart.h"
#include "ui/views/view.h"

namespace moebench::ui {

namespace {

std::string fmt_us(double us) { return fmt_ns(us * 1000.0); }

class TraceView : public View {
 public:
  const char* name() const override { return "Trace timeline"; }

  void draw(DashboardState& s) override {
    auto& traces = s.sources.traces;
    if (traces.empty()) {
      ImGui::TextDisabled("no trace loaded: moebench dashboard --trace trace.json (or results whose run.trace_file exists)");
      return;
    }
    std::vector<std::string> paths;
    for (auto& t : traces) paths.push_back(t.path);
    if (file_combo("trace", paths, current_)) fitted_ = -1;
    const TraceFile& tf = traces[static_cast<size_t>(current_)];
    if (!tf.trace) {
      note_line(tf.error, true);
      return;
    }
    const TraceModel& m = *tf.trace;
    TimeWindow bounds = full_window(m);
    if (fitted_ != current_) {
      window_ = bounds;
      fitted_ = current_;
    }
    if (ImGui::SmallButton("fit")) window_ = bounds;
    ImGui::SameLine();
    ImGui::TextDisabled("%zu slices on %zu tracks, %zu counters; window %s", m.span_count(), m.tracks.size(),
                        m.counters.size(), fmt_us(window_.width()).c_str());
    if (!tf.warnings.empty()) note_line(fmt::format("{} format problems, first: {}", tf.warnings.size(), tf.warnings[0]));

    const float label_w = 190, row_h = ImGui::GetTextLineHeight() + 3, ruler_h = 18, counter_h = 44;
    float total_h = ruler_h;
    for (auto& t : m.tracks) total_h += row_h * static_cast<float>(t.depth_count) + 4;
    total_h += counter_h * static_cast<float>(m.counters.size());
    ImGui::BeginChild("timeline", ImVec2(0, 0), false, ImGuiWindowFlags_NoScrollWithMouse);
    ImVec2 o = ImGui::GetCursorScreenPos();
    float width = std::max(50.0f, ImGui::GetContentRegionAvail().x - label_w);
    ImGui::InvisibleButton("area", ImVec2(label_w + width, std::max(total_h, ImGui::GetContentRegionAvail().y)));
    bool hovered = ImGui::IsItemHovered(), active = ImGui::IsItemActive();
    ImDrawList* dl = ImGui::GetWindowDrawList();
    const float x0 = o.x + label_w;
    auto x_of_us = [&](double us) { return x0 + static_cast<float>((us - window_.t0_us) / window_.width() * width); };

    // Ruler.
    // About one tick per 120 px, at 1, 2 or 5 x 10^n us.
    double raw = window_.width() / std::max(1.0, width / 120.0);
    double step = std::pow(10.0, std::floor(std::log10(raw)));
    step *= raw / step < 2 ? 2 : raw / step < 5 ? 5 : 10;
    for (double t = std::ceil(window_.t0_us / step) * step; t <= window_.t1_us; t += step) {
      float x = x_of_us(t);
      dl->AddLine(ImVec2(x, o.y), ImVec2(x, o.y + total_h), color::grid);
      double rel = t - m.t_min_us;
      if (std::fabs(rel) < step * 1e-6) rel = 0;  // no "-0 ns"
      dl->AddText(ImVec2(x + 2, o.y), color::text, fmt_us(rel).c_str());
    }

    // Tracks.
    TraceFrame f = build_trace_frame(m, window_, width);
    std::vector<float> track_y(m.tracks.size());
    float y = o.y + ruler_h;
    for (size_t i = 0; i < m.tracks.size(); ++i) {
      track_y[i] = y;
      const TraceTrack& t = m.tracks[i];
      dl->AddRectFilled(ImVec2(o.x, y), ImVec2(x0 + width, y + row_h * static_cast<float>(t.depth_count)),
                        t.gpu ? IM_COL32(36, 30, 44, 255) : IM_COL32(28, 32, 40, 255));
      dl->PushClipRect(ImVec2(o.x, y), ImVec2(x0 - 4, y + row_h * static_cast<float>(t.depth_count)), true);
      dl->AddText(ImVec2(o.x + 2, y + 1), color::text, t.label.c_str());
      dl->PopClipRect();
      y += row_h * static_cast<float>(t.depth_count) + 4;
    }
    const TraceBox* hover_box = nullptr;
    ImVec2 mouse = ImGui::GetIO().MousePos;
    dl->PushClipRect(ImVec2(x0, o.y), ImVec2(x0 + width, o.y + total_h), true);
    for (const TraceBox& b : f.boxes) {
      const std::string& nm = m.names[static_cast<size_t>(b.name)];
      ImVec2 a(x0 + b.x0, track_y[static_cast<size_t>(b.track)] + row_h * static_cast<float>(b.depth));
      ImVec2 z(x0 + b.x1, a.y + row_h - 1);
      ImU32 col = b.count > 1 ? IM_COL32(150, 150, 160, 255) : color::hashed(nm);
      dl->AddRectFilled(a, z, col);
      if (z.x - a.x > 30 && b.count == 1) {
        dl->PushClipRect(a, z, true);
        dl->AddText(ImVec2(a.x + 2, a.y), IM_COL32(10, 10, 10, 255), nm.c_str());
        dl->PopClipRect();
      }
      if (hovered && mouse.x >= a.x && mouse.x <= z.x && mouse.y >= a.y && mouse.y <= z.y) hover_box = &b;
    }
    dl->PopClipRect();
    // Counters, as lines under the tracks, each named in the label column (outside
    // the timeline's clip rectangle) with its largest value.
    const float counters_y = y;
    for (const TraceCounter& c : m.counters) {
      double vmax = 0;
      for (double v : c.value) vmax = std::max(vmax, v);
      dl->AddRectFilled(ImVec2(o.x, y), ImVec2(x0 + width, y + counter_h - 2), IM_COL32(26, 36, 30, 255));
      dl->PushClipRect(ImVec2(o.x, y), ImVec2(x0 - 4, y + counter_h), true);
      dl->AddText(ImVec2(o.x + 2, y + 1), color::text, c.label.c_str());
      bool bytes = c.label.find("bytes") != std::string::npos;
      std::string top = "max " + (bytes ? fmt_bytes(vmax) : fmt::format("{:.4g}", vmax));
      dl->AddText(ImVec2(o.x + 2, y + 1 + ImGui::GetTextLineHeight()), IM_COL32(150, 150, 160, 255), top.c_str());
      dl->PopClipRect();
      y += counter_h;
    }
    y = counters_y;
    dl->PushClipRect(ImVec2(x0, o.y), ImVec2(x0 + width, o.y + total_h), true);
    for (const TraceCounter& c : m.counters) {
      double vmax = 0;
      for (double v : c.value) vmax = std::max(vmax, v);
      std::vector<ImVec2> pts;
      auto lo = std::lower_bound(c.t_us.begin(), c.t_us.end(), window_.t0_us) - c.t_us.begin();
      auto hi = std::upper_bound(c.t_us.begin(), c.t_us.end(), window_.t1_us) - c.t_us.begin();
      lo = std::max<ptrdiff_t>(0, lo - 1);
      hi = std::min<ptrdiff_t>(static_cast<ptrdiff_t>(c.t_us.size()), hi + 1);
      auto dec = reports::decimate(std::span<const double>(c.value.data() + lo, static_cast<size_t>(hi - lo)),
                                   static_cast<size_t>(width * 2));
      for (auto& p : dec) {
        size_t i = static_cast<size_t>(lo) + static_cast<size_t>(p.x);
        pts.push_back(ImVec2(x_of_us(c.t_us[i]), y + counter_h - 4 - static_cast<float>(vmax > 0 ? p.y / vmax : 0) * (counter_h - 8)));
      }
      if (pts.size() >= 2) dl->AddPolyline(pts.data(), static_cast<int>(pts.size()), IM_COL32(110, 210, 130, 255), 0, 1.5f);
      y += counter_h;
    }
    dl->PopClipRect();

    if (hover_box) {
      const TraceSpan& sp = m.tracks[static_cast<size_t>(hover_box->track)].spans[hover_box->span];
      if (hover_box->count > 1)
        ImGui::SetTooltip("%d slices merged (zoom in)", hover_box->count);
      else
        ImGui::SetTooltip("%s\n%s\nstart %s, duration %s", m.names[static_cast<size_t>(sp.name)].c_str(),
                          m.names[static_cast<size_t>(sp.cat)].c_str(), fmt_us(sp.start_us - m.t_min_us).c_str(),
                          fmt_us(sp.end_us - sp.start_us).c_str());
    }
    ImGuiIO& io = ImGui::GetIO();
    if (hovered && io.MouseWheel != 0 && mouse.x >= x0) {
      double anchor = window_.t0_us + (mouse.x - x0) / width * window_.width();
      window_ = zoom_window(window_, anchor, io.MouseWheel > 0 ? 0.8 : 1.25, bounds);
    }
    if (active && ImGui::IsMouseDragging(ImGuiMouseButton_Left))
      window_ = pan_window(window_, -io.MouseDelta.x / width * window_.width(), bounds);
    ImGui::EndChild();
  }

 private:
  int current_ = 0;
  int fitted_ = -1;
  TimeWindow window_;
};

}  // namespace

std::unique_ptr<View> make_trace_view() { return std::make_unique<TraceView>(); }

}  // namespace moebench::ui
