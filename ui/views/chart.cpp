// chart.cpp: see chart.h.
#include "ui/views/chart.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "profiler/stats.h"
#include "ui/views/view.h"

namespace moebench::ui {

namespace color {
ImU32 series(int i, int n, float alpha) {
  float h = n > 0 ? static_cast<float>(i) / static_cast<float>(n) : 0.0f;
  float r, g, b;
  ImGui::ColorConvertHSVtoRGB(h * 0.85f, 0.65f, 0.95f, r, g, b);
  return ImGui::ColorConvertFloat4ToU32(ImVec4(r, g, b, alpha));
}
ImU32 heat(double v) {
  v = std::clamp(v, 0.0, 1.0);
  // Dark blue -> teal -> yellow.
  float t = static_cast<float>(v);
  float r = t < 0.5f ? 0.1f + t * 0.2f : 0.2f + (t - 0.5f) * 1.6f;
  float g = 0.12f + t * 0.78f;
  float b = t < 0.5f ? 0.35f + t * 0.5f : 0.6f - (t - 0.5f) * 1.0f;
  return ImGui::ColorConvertFloat4ToU32(ImVec4(r, g, b, 1.0f));
}
ImU32 hashed(const std::string& name) {
  uint32_t h = 2166136261u;
  for (unsigned char c : name) h = (h ^ c) * 16777619u;
  float r, g, b;
  ImGui::ColorConvertHSVtoRGB(static_cast<float>(h % 360) / 360.0f, 0.5f, 0.85f, r, g, b);
  return ImGui::ColorConvertFloat4ToU32(ImVec4(r, g, b, 1.0f));
}
}  // namespace color

std::string fmt_ns(double v) { return profiler::format_ns(v); }
std::string fmt_bytes(double v) { return profiler::format_bytes(v); }
std::string fmt_percent(double v) { return profiler::format_percent(v); }
std::string fmt_plain(double v) {
  if (std::fabs(v) >= 1e4) return fmt::format("{:.3g}", v);
  return fmt::format("{:g}", std::round(v * 100) / 100);
}

ImVec2 Plot::map(double x, double y) const {
  double fx = x1 > x0 ? (x - x0) / (x1 - x0) : 0;
  double fy = y1 > y0 ? (y - y0) / (y1 - y0) : 0;
  return ImVec2(p0.x + static_cast<float>(fx) * (p1.x - p0.x), p1.y - static_cast<float>(fy) * (p1.y - p0.y));
}

double Plot::x_of(float px) const {
  float w = p1.x - p0.x;
  return w > 0 ? x0 + (px - p0.x) / w * (x1 - x0) : x0;
}

namespace {
// A "nice" tick step for a range split into about n parts.
double nice_step(double range, int n) {
  if (!(range > 0)) return 1;
  double raw = range / n, mag = std::pow(10.0, std::floor(std::log10(raw)));
  double f = raw / mag;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}
}  // namespace

Plot begin_plot(const char* id, ImVec2 size, double x0, double x1, double y0, double y1, Formatter fx, Formatter fy) {
  Plot p;
  ImVec2 avail = ImGui::GetContentRegionAvail();
  if (size.x <= 0) size.x = std::max(avail.x, 50.0f);
  if (size.y <= 0) size.y = std::max(avail.y, 50.0f);
  ImVec2 origin = ImGui::GetCursorScreenPos();
  ImGui::InvisibleButton(id, size);
  p.hovered = ImGui::IsItemHovered();
  p.active = ImGui::IsItemActive();
  p.dl = ImGui::GetWindowDrawList();
  const float left = 64, bottom = 18, top = 4, right = 8;
  p.p0 = ImVec2(origin.x + left, origin.y + top);
  p.p1 = ImVec2(origin.x + size.x - right, origin.y + size.y - bottom);
  p.x0 = x0;
  p.x1 = x1 > x0 ? x1 : x0 + 1;
  p.y0 = y0;
  p.y1 = y1 > y0 ? y1 : y0 + 1;
  p.dl->AddRectFilled(p.p0, p.p1, IM_COL32(20, 22, 28, 255));
  // y ticks
  double ys = nice_step(p.y1 - p.y0, 4);
  for (double y = std::ceil(p.y0 / ys) * ys; y <= p.y1 + ys * 1e-9; y += ys) {
    ImVec2 a = p.map(p.x0, y);
    p.dl->AddLine(ImVec2(p.p0.x, a.y), ImVec2(p.p1.x, a.y), color::grid);
    std::string t = fy(y);
    ImVec2 ts = ImGui::CalcTextSize(t.c_str());
    p.dl->AddText(ImVec2(p.p0.x - ts.x - 4, a.y - ts.y * 0.5f), color::text, t.c_str());
  }
  // x ticks
  int nx = std::max(2, static_cast<int>((p.p1.x - p.p0.x) / 110));
  double xs = nice_step(p.x1 - p.x0, nx);
  for (double x = std::ceil(p.x0 / xs) * xs; x <= p.x1 + xs * 1e-9; x += xs) {
    ImVec2 a = p.map(x, p.y0);
    p.dl->AddLine(ImVec2(a.x, p.p0.y), ImVec2(a.x, p.p1.y), color::grid);
    std::string t = fx(x);
    ImVec2 ts = ImGui::CalcTextSize(t.c_str());
    p.dl->AddText(ImVec2(a.x - ts.x * 0.5f, p.p1.y + 2), color::text, t.c_str());
  }
  p.dl->AddRect(p.p0, p.p1, color::axis);
  return p;
}

void plot_line(const Plot& p, const std::vector<reports::Point>& pts, ImU32 col, float thickness) {
  if (pts.size() < 2) {
    plot_dots(p, pts, col);
    return;
  }
  p.dl->PushClipRect(p.p0, p.p1, true);
  std::vector<ImVec2> v;
  v.reserve(pts.size());
  for (auto& q : pts) v.push_back(p.map(q.x, q.y));
  // Draw in chunks so 16-bit draw-list indices never overflow.
  const size_t chunk = 4000;
  for (size_t i = 0; i + 1 < v.size(); i += chunk - 1) {
    size_t n = std::min(chunk, v.size() - i);
    p.dl->AddPolyline(&v[i], static_cast<int>(n), col, 0, thickness);
  }
  p.dl->PopClipRect();
}

void plot_dots(const Plot& p, const std::vector<reports::Point>& pts, ImU32 col, float radius) {
  p.dl->PushClipRect(p.p0, p.p1, true);
  for (auto& q : pts) p.dl->AddCircleFilled(p.map(q.x, q.y), radius, col, 8);
  p.dl->PopClipRect();
}

void plot_hline(const Plot& p, double y, ImU32 col, const std::string& label, float label_at) {
  if (y < p.y0 || y > p.y1) return;
  ImVec2 a = p.map(p.x0, y), b = p.map(p.x1, y);
  for (float x = a.x; x < b.x; x += 8) p.dl->AddLine(ImVec2(x, a.y), ImVec2(std::min(x + 4, b.x), a.y), col, 1.0f);
  ImVec2 ts = ImGui::CalcTextSize(label.c_str());
  float lx = a.x + 4 + (b.x - a.x - ts.x - 8) * std::clamp(label_at, 0.0f, 1.0f);
  p.dl->AddRectFilled(ImVec2(lx - 2, a.y - ts.y - 1), ImVec2(lx + ts.x + 2, a.y - 1), IM_COL32(20, 22, 28, 200));
  p.dl->AddText(ImVec2(lx, a.y - ts.y - 1), col, label.c_str());
}

void legend_item(ImU32 col, const char* label) {
  ImVec2 pos = ImGui::GetCursorScreenPos();
  float h = ImGui::GetTextLineHeight();
  ImGui::GetWindowDrawList()->AddRectFilled(ImVec2(pos.x, pos.y + h * 0.25f), ImVec2(pos.x + h, pos.y + h * 0.75f), col);
  ImGui::Dummy(ImVec2(h + 2, h));
  ImGui::SameLine();
  ImGui::TextUnformatted(label);
  ImGui::SameLine(0, 14);
}

void note_line(const std::string& text, bool is_error) {
  ImGui::PushStyleColor(ImGuiCol_Text, is_error ? color::error : color::note);
  ImGui::TextWrapped("%s", text.c_str());
  ImGui::PopStyleColor();
}

bool plot_zoom_x(const Plot& p, XRange& range, double n) {
  if ((!p.hovered && !p.active) || !(n > 0)) return false;
  ImGuiIO& io = ImGui::GetIO();
  double x0 = range.x0, x1 = range.x1 < 0 ? n : range.x1;
  bool changed = false;
  if (p.hovered && io.MouseWheel != 0) {
    double anchor = p.x_of(io.MousePos.x);
    double f = io.MouseWheel > 0 ? 0.8 : 1.25;
    double w = std::clamp((x1 - x0) * f, std::min(n, 8.0), n);
    double frac = (anchor - x0) / std::max(x1 - x0, 1e-9);
    x0 = anchor - frac * w;
    x1 = x0 + w;
    changed = true;
  }
  if (p.active && ImGui::IsMouseDragging(ImGuiMouseButton_Left)) {
    double per_px = (x1 - x0) / std::max(1.0f, p.p1.x - p.p0.x);
    double d = -io.MouseDelta.x * per_px;
    x0 += d;
    x1 += d;
    changed = true;
  }
  if (p.hovered && ImGui::IsMouseDoubleClicked(ImGuiMouseButton_Left)) {
    range = XRange{};
    return true;
  }
  if (!changed) return false;
  double w = x1 - x0;
  if (x0 < 0) x0 = 0, x1 = w;
  if (x1 > n) x1 = n, x0 = std::max(0.0, n - w);
  range = (x0 <= 0 && x1 >= n) ? XRange{} : XRange{x0, x1};
  return true;
}

const reports::Case* selected_case(const DashboardState& s) {
  const reports::Case* c = s.sources.find(s.selected);
  if (!c) ImGui::TextDisabled("select a case in the Runs table");
  return c;
}

size_t chart_max_points() { return static_cast<size_t>(std::max(64.0f, ImGui::GetContentRegionAvail().x * 2)); }

void dim_wrapped(const std::string& text) {
  ImGui::PushStyleColor(ImGuiCol_Text, ImGui::GetStyle().Colors[ImGuiCol_TextDisabled]);
  ImGui::PushTextWrapPos(0.0f);
  ImGui::TextUnformatted(text.c_str());
  ImGui::PopTextWrapPos();
  ImGui::PopStyleColor();
}

bool file_combo(const char* label, const std::vector<std::string>& paths, int& current, float width) {
  current = std::clamp(current, 0, std::max(0, static_cast<int>(paths.size()) - 1));
  if (paths.size() < 2) return false;
  bool changed = false;
  ImGui::SetNextItemWidth(width);
  if (ImGui::BeginCombo(label, paths[static_cast<size_t>(current)].c_str())) {
    for (int i = 0; i < static_cast<int>(paths.size()); ++i)
      if (ImGui::Selectable(paths[static_cast<size_t>(i)].c_str(), i == current) && i != current) {
        current = i;
        changed = true;
      }
    ImGui::EndCombo();
  }
  return changed;
}

}  // namespace moebench::ui
