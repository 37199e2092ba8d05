// report_test.cpp: Markdown and HTML rendering of results, the shared field
// table, and series decimation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <sstream>

#include "reports/fields.h"
#include "reports/formats.h"
#include "reports/html.h"
#include "reports/markdown.h"
#include "reports/series.h"
#include "reports/svg.h"
#include "tests/results_fixture.h"

namespace report_test {

using namespace moebench;
using namespace moebench::reports;
using moebench::test::make_case;
using moebench::test::make_results;

namespace {

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

// True when some tag ('<', a letter, then up to the next '<' or '>') has a src= or
// href= attribute. A plain scan: std::regex recurses per character and overflows
// the stack on a page this size under AddressSanitizer.
bool tag_loads_something(const std::string& html) {
  for (size_t i = 0; i + 1 < html.size(); ++i) {
    if (html[i] != '<' || !std::isalpha(static_cast<unsigned char>(html[i + 1]))) continue;
    const size_t end = std::min(html.find_first_of("<>", i + 1), html.size());
    for (size_t p = i + 2; p < end; ++p) {
      if (!std::isspace(static_cast<unsigned char>(html[p]))) continue;
      for (const char* attr : {"src", "href"}) {
        const size_t n = std::strlen(attr);
        if (p + 1 + n > end || html.compare(p + 1, n, attr) != 0) continue;
        size_t q = p + 1 + n;
        while (q < end && std::isspace(static_cast<unsigned char>(html[q]))) ++q;
        if (q < end && html[q] == '=') return true;
      }
    }
    i = end - 1;
  }
  return false;
}

// True when the line is a markdown table row: starts and ends with '|'.
bool is_table_row(const std::string& line) { return line.size() >= 2 && line.front() == '|' && line.back() == '|'; }

Results hostile_results() {
  Results r = make_results();
  r.model.name = "<script>alert(1)</script>";
  r.cases[0].name = "a|b <img src=x onerror=alert(1)>";
  r.cases[1].status = CaseStatus::failed;
  r.cases[1].error = "bad \"quote\" & <tag>";
  r.cases[1].samples.clear();
  // A long case: 100k decode steps with one spike.
  Case big = make_case("long", "big", "P2", 1, 100'000, 800'000);
  big.samples[0].latency_ns[40'000] = 50'000'000;
  r.cases.push_back(big);
  return r;
}

}  // namespace

TEST(Fields, OneTableDrivesMarkdownAndHtml) {
  Results r = make_results();
  std::string md = render_markdown(r), html = render_html(r);
  for (const SummaryColumn& c : summary_columns()) {
    EXPECT_NE(md.find(c.header), std::string::npos) << c.key;
    EXPECT_NE(html.find(std::string("<th>") + svg::escape(c.header) + "</th>"), std::string::npos) << c.key;
  }
  for (const char* key : {"suite", "case", "stage", "decode_tok_s", "ttft_cold_ns", "ttft_warm_ns", "hit_rate",
                          "mean_expert_load_ns", "memory_peak_bytes", "bound_percent"}) {
    bool found = false;
    for (const SummaryColumn& c : summary_columns()) found |= std::string(c.key) == key;
    EXPECT_TRUE(found) << key;
  }
}

TEST(Fields, ValuesAndFailedCases) {
  Results r = make_results();
  const Case& c = r.cases[0];
  for (const SummaryColumn& col : summary_columns()) {
    std::string key = col.key;
    if (key == "decode_tok_s") {
      EXPECT_DOUBLE_EQ(col.value(c), c.aggregates.decode_tok_s);
    } else if (key == "memory_peak_bytes") {
      EXPECT_EQ(col.text(c), "3.50 GiB");
    } else if (key == "hit_rate") {
      EXPECT_EQ(col.text(c), "65.0%");
    }
  }
  Case f = c;
  f.status = CaseStatus::failed;
  for (const SummaryColumn& col : summary_columns())
    if (col.numeric) {
      EXPECT_TRUE(std::isnan(col.value(f))) << col.key;
      EXPECT_EQ(col.text(f), "-") << col.key;
    }
}

TEST(Markdown, OneRowPerCaseAndEscapedPipes) {
  Results r = hostile_results();
  std::string md = render_markdown(r);
  // Header + separator + one row per case, all starting with '|'.
  size_t rows = 0;
  std::istringstream in(md);
  for (std::string line; std::getline(in, line);)
    if (is_table_row(line)) ++rows;
  EXPECT_EQ(rows, r.cases.size() + 2);
  EXPECT_NE(md.find("a\\|b"), std::string::npos);
  EXPECT_NE(md.find("bad \"quote\""), std::string::npos);  // failed case listed with its error
}

// The device line carries only what applies: no SMs or host->device link for a CPU,
// and a CPU case's memory peak is the process's peak resident set.
TEST(Markdown, DeviceLineShowsOnlyFieldsThatApply) {
  Results r = make_results();
  r.device.hbm_read_gbps = 4450;
  r.device.hbm_copy_gbps = 3950;
  r.device.hbm_gbps = 4450;
  const std::string gpu = device_line(r.device);
  for (const char* want : {"132 SMs", "driver 13.0", "read stream", "copy kernel", "host->device"})
    EXPECT_NE(gpu.find(want), std::string::npos) << want << " in " << gpu;
  DeviceInfo cpu;
  cpu.name = "AMD EPYC";
  cpu.memory_bytes = 24LL << 30;
  cpu.hbm_gbps = 12.5;
  const std::string line = device_line(cpu);
  for (const char* not_there : {"SMs", "H2D", "host->device", "driver", "0.00"})
    EXPECT_EQ(line.find(not_there), std::string::npos) << not_there << " in " << line;
  EXPECT_NE(line.find("AMD EPYC (cpu"), std::string::npos) << line;
  r.device = cpu;
  const std::string md = render_markdown(r);
  EXPECT_NE(md.find("- device: " + line), std::string::npos) << md;
  EXPECT_EQ(md.find("SMs"), std::string::npos);
  EXPECT_EQ(render_html(r).find("SMs"), std::string::npos);
  Case c = make_case("s", "cpu", "custom");
  c.memory = MemoryInfo{};
  c.memory.host_peak_rss_bytes = 300LL << 20;
  EXPECT_EQ(memory_peak_bytes(c), 300LL << 20);
  // A case that recorded no memory figure (a batched bench case) shows "-", not 0 B.
  for (const SummaryColumn& col : summary_columns())
    if (std::string(col.key) == "memory_peak_bytes") {
      EXPECT_EQ(col.text(c), "300 MiB");
      c.memory = MemoryInfo{};
      EXPECT_EQ(col.text(c), "-");
      EXPECT_TRUE(std::isnan(col.value(c)));
    }
}

// A case above its bound by more than the bandwidths' noise says so under the bounds (Markdown) and
// in its section (HTML), naming the figure; one within the noise (102%) does not.
TEST(Markdown, CaseAboveItsBoundIsFlagged) {
  Results r = make_results();
  r.cases[0].bound->percent = 110.0;
  r.cases[1].bound->percent = 102.0;
  const std::string md = render_markdown(r);
  const size_t flag = md.find("**above its bound**: ran at 110.0% of its bound");
  ASSERT_NE(flag, std::string::npos) << md;
  EXPECT_GT(flag, md.find("- short/c0 (P0):"));
  EXPECT_LT(flag, md.find("- short/c1 (P0):"));
  EXPECT_EQ(md.find("above its bound", flag + 20), std::string::npos) << md;
  const std::string html = render_html(r);
  EXPECT_NE(html.find("<p class=\"err\">Above its bound: ran at 110.0% of its bound"), std::string::npos);
  EXPECT_EQ(html.find("ran at 102.0%"), std::string::npos);
}

// A case whose repetitions gave other tokens than its first says so, naming them, in the
// Markdown (in a list after the table) and in its HTML section; the other cases say nothing.
TEST(Markdown, RepetitionsWithOtherTokensAreNamed) {
  Results r = make_results();
  r.cases[1].other_tokens_repetitions = {1, 2};
  const std::string md = render_markdown(r);
  EXPECT_NE(md.find("- short/c1 (P0): 2 of 3 repetitions generated other tokens than the first (repetitions 1, 2;"),
            std::string::npos)
      << md;
  EXPECT_EQ(md.find("- short/c0 (P0): 2 of"), std::string::npos) << md;
  EXPECT_NE(render_html(r).find("<p class=\"err\">Other tokens: 2 of 3 repetitions"), std::string::npos);
  EXPECT_EQ(render_markdown(make_results()).find("other tokens"), std::string::npos);
}

TEST(Markdown, TableIsAligned) {
  std::string t = markdown_table({"a", "num"}, {false, true}, {{"xyz", "1"}, {"q", "12345"}});
  EXPECT_EQ(t,
            "| a   |   num |\n"
            "| --- | ----: |\n"
            "| xyz |     1 |\n"
            "| q   | 12345 |\n");
}

TEST(Html, SelfContainedAndEscaped) {
  std::string html = render_html(hostile_results());
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  // No tag loads anything (the case name's "src=" is escaped text, not an attribute).
  EXPECT_TRUE(tag_loads_something("<p>x</p><img alt=\"\"\n src = 'y'>"));  // the scan sees a loading tag
  EXPECT_FALSE(tag_loads_something("<p>&lt;img src=x&gt;</p><a name=href>"));
  EXPECT_FALSE(tag_loads_something(html));
  EXPECT_EQ(html.find("url("), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<img"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("bad &quot;quote&quot; &amp; &lt;tag&gt;"), std::string::npos);
  EXPECT_NE(html.find("<style>"), std::string::npos);
}

TEST(Html, WellFormedCharts) {
  Results r = hostile_results();
  std::string html = render_html(r);
  size_t open = count(html, "<svg "), close = count(html, "</svg>");
  EXPECT_EQ(open, close);
  // 3 overview bar charts + per ok case: latency, hit rate, memory, heatmap (the failed case has no samples/series
  // drawn except its own hit-rate, memory and heatmap data).
  EXPECT_GE(open, 3u + 4u * 3u);
  EXPECT_EQ(count(html, "<details"), count(html, "</details>"));
  EXPECT_EQ(count(html, "<table>"), count(html, "</table>"));
  EXPECT_EQ(count(html, "<tr"), count(html, "</tr>"));
  EXPECT_EQ(count(html, "<html"), 1u);
  EXPECT_EQ(count(html, "</html>"), 1u);
  // Layer x expert heatmap: 2 layers x 4 experts, one <rect> with a tooltip per cell.
  EXPECT_NE(html.find("<title>layer 1 expert 3: 25</title>"), std::string::npos);
}

TEST(Html, LongSeriesAreDecimated) {
  Results r;
  r.cases.push_back(make_case("long", "big", "P2", 1, 100'000, 800'000));
  std::string html = render_html(r);
  EXPECT_LT(html.size(), 400'000u);  // 100k points would be megabytes
  // Every polyline holds at most kMaxChartPoints points.
  const std::string key = "points=\"";
  size_t n_poly = 0;
  for (size_t p = html.find(key); p != std::string::npos; p = html.find(key, p + 1)) {
    ++n_poly;
    const size_t begin = p + key.size(), end = html.find('"', begin);
    ASSERT_NE(end, std::string::npos);
    EXPECT_LE(static_cast<size_t>(std::count(html.begin() + begin, html.begin() + end, ',')), kMaxChartPoints);
  }
  EXPECT_GE(n_poly, 2u);  // latency and hit rate
}

TEST(Html, EmptyResultsRender) {
  Results r;
  std::string html = render_html(r);
  EXPECT_NE(html.find("No cases finished yet"), std::string::npos);
  EXPECT_EQ(count(html, "<svg "), count(html, "</svg>"));
}

TEST(Series, DecimateKeepsSpikesAndBounds) {
  std::vector<double> y(100'000, 1.0);
  y[12'345] = 100.0;
  y[77'777] = -5.0;
  std::vector<Point> d = decimate(y, 500);
  EXPECT_LE(d.size(), 500u);
  bool hi = false, lo = false;
  for (size_t i = 0; i < d.size(); ++i) {
    hi |= d[i].x == 12'345 && d[i].y == 100.0;
    lo |= d[i].x == 77'777 && d[i].y == -5.0;
    if (i) {
      EXPECT_LT(d[i - 1].x, d[i].x);
    }
  }
  EXPECT_TRUE(hi);
  EXPECT_TRUE(lo);
  std::vector<double> small = {1, 2, NAN, 4};
  d = decimate(small, 500);
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d[2].x, 3);
}

// ---- confidence intervals of the timings

namespace {

// A case of `reps` repetitions whose r-th repetition runs `factor(r)` times slower
// (decode, prefill and TTFT alike).
Case spread_case(const std::string& name, int reps, double (*factor)(int)) {
  Case c = make_case("noise", name, "P0", reps);
  for (size_t r = 0; r < c.samples.size(); ++r) {
    Case one = c;
    one.samples = {c.samples[r]};
    moebench::test::scale_case(one, factor(static_cast<int>(r)), factor(static_cast<int>(r)));
    c.samples[r] = one.samples[0];
  }
  c.aggregates = compute_aggregates(c);
  return c;
}

Results with_cases(std::vector<Case> cases) {
  Results r = make_results();
  r.cases = std::move(cases);
  return r;
}

// The table row of the case named `name`.
std::string md_row(const std::string& md, const std::string& name) {
  std::istringstream in(md);
  for (std::string line; std::getline(in, line);)
    if (is_table_row(line) && line.find("| " + name + " ") != std::string::npos) return line;
  return "";
}

}  // namespace

TEST(Intervals, EveryTimingCellShowsPlusMinusAndN) {
  Results r = with_cases({make_case("short", "ten", "P0", 10), make_case("short", "three", "P0", 3)});
  const std::string md = render_markdown(r);
  const std::string ten = md_row(md, "ten"), three = md_row(md, "three");
  ASSERT_FALSE(ten.empty()) << md;
  // prefill, decode, TTFT cold (one repetition has it), TTFT warm.
  EXPECT_EQ(count(ten, "±"), 3u) << ten;
  EXPECT_EQ(count(ten, "(n=10)"), 3u) << ten;
  EXPECT_EQ(count(ten, "(n=1, no CI)"), 1u) << ten;
  // Three repetitions cannot reach 95%: the range of all three, at 1 - 2^(1-3) = 75%.
  EXPECT_EQ(count(three, "(n=3, 75% CI)"), 3u) << three;
  EXPECT_NE(md.find("Timings: median over the measured repetitions ±"), std::string::npos) << md;
  const std::string html = render_html(r);
  EXPECT_GE(count(html, "±"), 6u);
  EXPECT_EQ(count(html, "(n=10)"), 3u);
  EXPECT_NE(html.find("title=\"98% interval of the median: "), std::string::npos);  // n = 10: coverage 97.9%
  // Counters summed over repetitions (hit rate, memory) carry no interval.
  for (const SummaryColumn& col : summary_columns())
    if (std::string(col.key) == "hit_rate" || std::string(col.key) == "memory_peak_bytes") {
      EXPECT_EQ(cell_with_interval(col, r.cases[0]), col.text(r.cases[0]));
    }
}

TEST(Intervals, MarginCoversTheIntervalAndMatchesTheMedianShown) {
  Case c = spread_case("spread", 9, [](int r) { return 1.0 + 0.03 * r; });
  for (const SummaryColumn& col : summary_columns()) {
    if (!col.samples) continue;
    const MedianInterval m = column_interval(col, c);
    if (m.n < 2) continue;
    EXPECT_DOUBLE_EQ(m.median, col.value(c)) << col.key;  // the ± is about the number the cell shows
    const double margin = interval_margin(m);
    EXPECT_LE(m.median * (1 - margin), m.lo * (1 + 1e-12)) << col.key;
    EXPECT_GE(m.median * (1 + margin), m.hi * (1 - 1e-12)) << col.key;
    EXPECT_GT(margin, 0) << col.key;
  }
}

TEST(Intervals, WideIntervalsAreNamedUnderTheTables) {
  Case tight = make_case("noise", "tight", "P0", 10);
  Case noisy = spread_case("noisy", 10, [](int r) { return 1.0 + 0.25 * (r % 4); });
  const std::string calm = render_markdown(with_cases({tight}));
  EXPECT_TRUE(wide_intervals(with_cases({tight})).empty());
  EXPECT_EQ(calm.find("Warning: noisy timings"), std::string::npos) << calm;
  EXPECT_EQ(render_html(with_cases({tight})).find("Warning: noisy timings"), std::string::npos);

  const Results mixed = with_cases({tight, noisy});
  const std::vector<WideInterval> wide = wide_intervals(mixed);
  ASSERT_FALSE(wide.empty());
  for (const WideInterval& w : wide) {
    EXPECT_EQ(w.case_label, "noise/noisy (P0)");
    EXPECT_GT(w.margin, kWideIntervalMargin);
    EXPECT_EQ(w.n, 10);
  }
  const std::string md = render_markdown(mixed);
  const size_t warn = md.find("Warning: noisy timings");
  ASSERT_NE(warn, std::string::npos) << md;
  const std::string line = md.substr(warn, md.find('\n', warn) - warn);
  EXPECT_NE(line.find("in 1 case(s)"), std::string::npos) << line;
  for (const char* hint : {"--repetitions N", "--threads N", "idle machine"})
    EXPECT_NE(line.find(hint), std::string::npos) << hint;
  // One list item per noisy case, naming its wide cells; the tight case is not named.
  const std::string warning = md.substr(warn, md.find("\nBounds:") - warn);
  EXPECT_NE(warning.find("\n- noise/noisy (P0): prefill tok/s (total) ±"), std::string::npos) << warning;
  EXPECT_NE(warning.find("decode tok/s (per sequence) ±"), std::string::npos) << warning;
  EXPECT_EQ(warning.find("noise/tight"), std::string::npos) << warning;
  EXPECT_GT(warn, md.rfind("| noise")) << "the warning follows the table";
  const std::string html = render_html(mixed);
  EXPECT_NE(html.find("<div class=\"warn\"><p>Warning: noisy timings"), std::string::npos);
  EXPECT_NE(html.find("<li>noise/noisy (P0): "), std::string::npos);
  EXPECT_NE(html.find("class=\"num wide\""), std::string::npos);
}

TEST(Intervals, CsvAndJsonlCarryTheInterval) {
  Results r = with_cases({make_case("short", "ten", "P0", 10)});
  r.cases.push_back(r.cases[0]);
  r.cases[1].name = "failed";
  r.cases[1].status = CaseStatus::failed;
  const std::string csv = render_csv(r);
  const std::string head = csv.substr(0, csv.find('\n'));
  for (const char* key : {"decode_tok_s,decode_tok_s_ci_lo,decode_tok_s_ci_hi,decode_tok_s_ci_coverage,decode_tok_s_n",
                          "ttft_warm_ns_ci_lo", "prefill_tok_s_n"})
    EXPECT_NE(head.find(key), std::string::npos) << key << " in " << head;
  std::istringstream in(render_jsonl(r));
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  const nlohmann::json row = nlohmann::json::parse(line);
  EXPECT_EQ(row["decode_tok_s_n"], 10);
  EXPECT_LE(row["decode_tok_s_ci_lo"].get<double>(), row["decode_tok_s"].get<double>());
  EXPECT_GE(row["decode_tok_s_ci_hi"].get<double>(), row["decode_tok_s"].get<double>());
  EXPECT_GE(row["decode_tok_s_ci_coverage"].get<double>(), 0.95);
  ASSERT_TRUE(std::getline(in, line));
  const nlohmann::json failed = nlohmann::json::parse(line);
  EXPECT_TRUE(failed["decode_tok_s_n"].is_null());
  EXPECT_TRUE(failed["decode_tok_s_ci_lo"].is_null());
}

// Rate and latency headers say whether they are per sequence or a total, and the
// report of any results file names the tool once.
TEST(Intervals, HeadersNamePerSequenceOrTotal) {
  for (const SummaryColumn& col : summary_columns()) {
    const std::string h = col.header;
    if (h.find("tok/s") != std::string::npos || h.find("TTFT") != std::string::npos) {
      EXPECT_TRUE(h.find("(per sequence)") != std::string::npos || h.find("(total)") != std::string::npos) << h;
    }
  }
  Results r = make_results();
  r.run.command_line = {"moebench", "bench"};
  for (const std::string& out : {render_markdown(r), render_html(r)})
    EXPECT_EQ(out.find("moebench moebench"), std::string::npos);
}

}  // namespace report_test
