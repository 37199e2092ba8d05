// svg.cpp: see svg.h. Fixed 760 px wide charts, coordinates with one decimal.
// No xmlns attribute: inline <svg> in HTML5 needs none, and the report then
// holds no URL at all (it must open from disk with no network).
#include "reports/svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace moebench::reports::svg {

std::string escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += ch;
    }
  }
  return out;
}

namespace {

constexpr double kWidth = 760;

std::string shorten(const std::string& s, size_t n) { return s.size() <= n ? s : s.substr(0, n - 1) + "~"; }

std::string open_svg(double w, double h, const std::string& title) {
  return fmt::format(
      "<svg width=\"{:.0f}\" height=\"{:.0f}\" viewBox=\"0 0 {:.0f} {:.0f}\" "
      "role=\"img\" font-family=\"sans-serif\" font-size=\"11\">\n<title>{}</title>\n"
      "<text x=\"4\" y=\"14\" font-size=\"13\" font-weight=\"bold\">{}</text>\n",
      w, h, w, h, escape(title), escape(title));
}

std::string legend(double x, double y, const std::vector<std::pair<std::string, std::string>>& items) {
  std::string out;
  for (const auto& [name, color] : items) {
    out += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"10\" height=\"10\" fill=\"{}\"/>", x, y - 9, escape(color));
    out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\">{}</text>\n", x + 14, y, escape(name));
    x += 24 + 6.5 * static_cast<double>(name.size());
  }
  return out;
}

double finite_max(double a, double b) { return std::isfinite(b) ? std::max(a, b) : a; }

}  // namespace

std::string bar_chart(const std::string& title, const std::vector<std::string>& labels,
                      const std::vector<BarSeries>& series, Formatter fmt_value) {
  const double label_w = 230, value_w = 90, top = 40, bar_h = 14, gap = 8;
  const double plot_w = kWidth - label_w - value_w;
  double vmax = 0;
  for (const auto& s : series)
    for (double v : s.values) vmax = finite_max(vmax, v);
  double row_h = bar_h * static_cast<double>(std::max<size_t>(series.size(), 1)) + gap;
  double h = top + row_h * static_cast<double>(labels.size()) + 10;
  std::string out = open_svg(kWidth, h, title);
  std::vector<std::pair<std::string, std::string>> items;
  for (const auto& s : series) items.push_back({s.name, s.color});
  out += legend(label_w, 30, items);
  for (size_t i = 0; i < labels.size(); ++i) {
    double y0 = top + row_h * static_cast<double>(i);
    out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", label_w - 6,
                       y0 + row_h / 2 + 2, escape(shorten(labels[i], 38)));
    for (size_t k = 0; k < series.size(); ++k) {
      double v = i < series[k].values.size() ? series[k].values[i] : NAN;
      double y = y0 + bar_h * static_cast<double>(k);
      if (!std::isfinite(v)) {
        out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" fill=\"#888\">n/a</text>\n", label_w + 2, y + bar_h - 3);
        continue;
      }
      double w = vmax > 0 ? std::max(0.0, v) / vmax * plot_w : 0;
      out += fmt::format(
          "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"><title>{}: {}</title></rect>",
          label_w, y, w, bar_h - 2, escape(series[k].color), escape(series[k].name), escape(fmt_value(v)));
      out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\">{}</text>\n", label_w + w + 4, y + bar_h - 3,
                         escape(fmt_value(v)));
    }
  }
  out += "</svg>\n";
  return out;
}

std::string line_chart(const std::string& title, const std::vector<LineSeries>& series,
                       const std::vector<RefLine>& refs, const std::string& x_label, Formatter fmt_y,
                       double y_max_fixed) {
  const double h = 260, left = 80, right = 20, top = 40, bottom = 36;
  const double pw = kWidth - left - right, ph = h - top - bottom;
  double xmax = 1, ymax = 0;
  for (const auto& s : series)
    for (const Point& p : s.points) {
      xmax = std::max(xmax, p.x);
      ymax = finite_max(ymax, p.y);
    }
  for (const auto& r : refs) ymax = finite_max(ymax, r.y);
  if (y_max_fixed > 0) ymax = y_max_fixed;
  if (ymax <= 0) ymax = 1;
  auto X = [&](double x) { return left + x / xmax * pw; };
  auto Y = [&](double y) { return top + ph - std::clamp(y / ymax, 0.0, 1.0) * ph; };
  std::string out = open_svg(kWidth, h, title);
  std::vector<std::pair<std::string, std::string>> items;
  for (const auto& s : series) items.push_back({s.name, s.color});
  for (const auto& r : refs) items.push_back({r.name + " " + fmt_y(r.y), r.color});
  out += legend(left, 30, items);
  // Axes and ticks.
  out += fmt::format("<path d=\"M{:.1f} {:.1f}V{:.1f}H{:.1f}\" stroke=\"#444\" fill=\"none\"/>\n", left, top, top + ph,
                     left + pw);
  for (double f : {0.0, 0.5, 1.0}) {
    out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>", left - 4, Y(f * ymax) + 4,
                       escape(fmt_y(f * ymax)));
    out += fmt::format("<path d=\"M{:.1f} {:.1f}H{:.1f}\" stroke=\"#ddd\"/>\n", left, Y(f * ymax), left + pw);
  }
  out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\">0</text>", left, top + ph + 14);
  out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{:.0f}</text>", left + pw, top + ph + 14, xmax);
  out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", left + pw / 2, h - 6,
                     escape(x_label));
  for (const auto& s : series) {
    if (s.points.empty()) continue;
    if (s.markers) {
      for (const Point& p : s.points)
        out += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"/>", X(p.x), Y(p.y), escape(s.color));
      out += "\n";
    } else {
      out += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.2\" points=\"", escape(s.color));
      for (const Point& p : s.points) out += fmt::format("{:.1f},{:.1f} ", X(p.x), Y(p.y));
      out += "\"/>\n";
    }
  }
  for (const auto& r : refs)
    out += fmt::format("<path d=\"M{:.1f} {:.1f}H{:.1f}\" stroke=\"{}\" stroke-dasharray=\"4 3\"/>\n", left, Y(r.y),
                       left + pw, escape(r.color));
  out += "</svg>\n";
  return out;
}

std::string heatmap(const std::string& title, const std::vector<std::vector<int64_t>>& m,
                    const std::string& row_label, const std::string& col_label) {
  size_t rows = m.size(), cols = 0;
  int64_t vmax = 0;
  for (const auto& r : m) {
    cols = std::max(cols, r.size());
    for (int64_t v : r) vmax = std::max(vmax, v);
  }
  const double left = 70, top = 40;
  double cw = cols ? std::clamp(600.0 / static_cast<double>(cols), 3.0, 40.0) : 40;
  double ch = rows ? std::clamp(480.0 / static_cast<double>(rows), 3.0, 18.0) : 18;
  double h = top + ch * static_cast<double>(rows) + 40;
  std::string out = open_svg(kWidth, h, title);
  out += fmt::format("<text x=\"{:.1f}\" y=\"30\">{} (rows) x {} (columns), max {}</text>\n", left, escape(row_label),
                     escape(col_label), vmax);
  for (size_t r = 0; r < rows; ++r) {
    double y = top + ch * static_cast<double>(r);
    if (rows <= 64 || r % 8 == 0)
      out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\" font-size=\"{:.0f}\">{}</text>", left - 4,
                         y + ch - 1, std::min(11.0, ch), r);
    for (size_t c = 0; c < m[r].size(); ++c) {
      double f = vmax > 0 ? static_cast<double>(m[r][c]) / static_cast<double>(vmax) : 0;
      // White -> dark blue.
      int red = static_cast<int>(std::lround(255 - f * (255 - 8)));
      int green = static_cast<int>(std::lround(255 - f * (255 - 48)));
      int blue = static_cast<int>(std::lround(255 - f * (255 - 107)));
      out += fmt::format(
          "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"rgb({},{},{})\"><title>{} {} {} {}: "
          "{}</title></rect>",
          left + cw * static_cast<double>(c), y, cw, ch, red, green, blue, escape(row_label), r, escape(col_label), c,
          m[r][c]);
    }
    out += "\n";
  }
  for (size_t c = 0; c < cols; ++c)
    if (cols <= 32 || c % 8 == 0)
      out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>",
                         left + cw * (static_cast<double>(c) + 0.5), top + ch * static_cast<double>(rows) + 14, c);
  out += "\n</svg>\n";
  return out;
}

}  // namespace moebench::reports::svg
