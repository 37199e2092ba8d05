// layout.cpp: see layout.h.
#include "ui/model/layout.h"

#include <algorithm>

namespace moebench::ui {

int label_stride(int n, float cell_px, float label_px, float gap_px) {
  if (n <= 1) return 1;
  const float need = label_px + gap_px;
  // 1, 2, 4, 5, 8, then 10, 16, 20, 25, 32, 50, 64 times powers of ten.
  static const int base[] = {10, 16, 20, 25, 32, 50, 64};
  for (int k : {1, 2, 4, 5, 8})
    if (static_cast<float>(k) * cell_px >= need) return std::min(k, n);
  for (int scale = 1; scale <= 1'000'000; scale *= 10)
    for (int b : base) {
      int k = b * scale;
      if (k >= n || static_cast<float>(k) * cell_px >= need) return std::min(k, n);
    }
  return n;
}

StageRowLayout stage_row_layout(float avail_px, float label_w, float text_w, float min_bar_px, float pad_px) {
  StageRowLayout l;
  float beside = avail_px - label_w - text_w - pad_px;
  if (beside >= min_bar_px) {
    l.bar_w = beside;
  } else {
    l.text_below = true;
    l.bar_w = std::max(1.0f, avail_px - label_w);
  }
  return l;
}

}  // namespace moebench::ui
