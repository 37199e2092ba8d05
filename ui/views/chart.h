// chart.h: the ImDrawList helpers every chart view shares — a plot rectangle
// with data -> pixel mapping, axes with formatted ticks, polylines, marks, and
// the horizontal zoom/pan of the x axis. There is no ImPlot in Debian.
#pragma once
#include <imgui.h>

#include <string>
#include <vector>

#include "reports/series.h"
#include "ui/model/chart_frames.h"

namespace moebench::ui {

namespace color {
inline constexpr ImU32 prefill = IM_COL32(255, 160, 60, 255);
inline constexpr ImU32 decode = IM_COL32(80, 170, 255, 255);
inline constexpr ImU32 grid = IM_COL32(255, 255, 255, 28);
inline constexpr ImU32 axis = IM_COL32(200, 200, 200, 120);
inline constexpr ImU32 text = IM_COL32(220, 220, 220, 255);
inline constexpr ImU32 error = IM_COL32(255, 90, 90, 255);
inline constexpr ImU32 note = IM_COL32(240, 200, 90, 255);
// A distinct colour for series i of n (hue wheel).
ImU32 series(int i, int n, float alpha = 1.0f);
// Colour scale for a heatmap value in [0, 1] (dark blue -> yellow).
ImU32 heat(double v);
// A stable colour for a name (trace slices).
ImU32 hashed(const std::string& name);
}  // namespace color

using Formatter = std::string (*)(double);
std::string fmt_ns(double v);
std::string fmt_bytes(double v);
std::string fmt_percent(double v);  // fraction -> "87.3%"
std::string fmt_plain(double v);

struct Plot {
  ImVec2 p0, p1;           // pixel rectangle of the data area
  double x0 = 0, x1 = 1;   // data range shown
  double y0 = 0, y1 = 1;
  ImDrawList* dl = nullptr;
  bool hovered = false;
  bool active = false;  // the mouse button is held on the plot
  ImVec2 map(double x, double y) const;
  double x_of(float px) const;
};

// Reserves `size` (x <= 0: all available width), draws background, grid and
// axis tick labels. Returns the plot; the caller draws into it.
Plot begin_plot(const char* id, ImVec2 size, double x0, double x1, double y0, double y1, Formatter fx, Formatter fy);
void plot_line(const Plot& p, const std::vector<reports::Point>& pts, ImU32 col, float thickness = 1.5f);
void plot_dots(const Plot& p, const std::vector<reports::Point>& pts, ImU32 col, float radius = 2.5f);
// label_at: where the label sits along the line, 0 (left) .. 1 (right).
void plot_hline(const Plot& p, double y, ImU32 col, const std::string& label, float label_at = 1.0f);
// A colour swatch and a label on the current line.
void legend_item(ImU32 col, const char* label);
// One line of warning text (a frame's note, a file's error).
void note_line(const std::string& text, bool is_error = false);
// Dimmed text that wraps at the window's edge instead of running past it.
void dim_wrapped(const std::string& text);
// A combo over the paths of loaded files (drawn only when there is more than one);
// clamps `current` into range; true when the user picked another file.
bool file_combo(const char* label, const std::vector<std::string>& paths, int& current, float width = 300);

// Mouse wheel zooms the x axis around the cursor, dragging pans; `range` is in
// x units over [0, n]. Double-click resets. Returns true when it changed.
bool plot_zoom_x(const Plot& p, XRange& range, double n);

}  // namespace moebench::ui
