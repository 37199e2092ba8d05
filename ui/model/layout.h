// layout.h: pixel arithmetic the views use so that labels fit — which rows of a
// heatmap axis get a label, and where a stage bar's text goes — kept out of the
// views (no ImGui here) so it can be tested for any size.
#pragma once

namespace moebench::ui {

// Every how many rows (or columns) an axis of n cells, each cell_px apart, can
// carry a label label_px tall (or wide) plus gap_px between labels without
// overlap: the smallest of 1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 50, 64, ... that fits
// (labels then fall on round indices), at most n (only the first label).
int label_stride(int n, float cell_px, float label_px, float gap_px = 2.0f);

// One stage bar: the stage name (label_w), the bar, then its text (text_w).
// When the text does not fit after a bar at least min_bar_px wide it goes on a
// line of its own under the bar, and the bar takes the width left by the name.
struct StageRowLayout {
  float bar_w = 0;
  bool text_below = false;
};
StageRowLayout stage_row_layout(float avail_px, float label_w, float text_w, float min_bar_px = 80.0f, float pad_px = 8.0f);

}  // namespace moebench::ui
