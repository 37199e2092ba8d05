// trace_model.h: a Chrome trace (the profiler's trace.json, or any trace-event
// JSON) as tracks of time spans, and the frame the timeline view draws from it:
// boxes in pixels for one visible time window, with spans narrower than a pixel
// merged so 100k-event traces stay fluid. No ImGui here.
//
// Tracks: one per (pid, tid) with X or B/E slices, named from M metadata
// ("GPU 0 / stream 7", "moebench (CPU) / engine"); GPU tracks are those of
// processes with pid >= 100 or a process name starting with "GPU" (the
// profiler's layout, profiler/chrome_trace.h). C events become counter tracks.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace moebench::ui {

struct TraceSpan {
  double start_us = 0;
  double end_us = 0;
  int32_t name = 0;   // index into TraceModel::names
  int32_t cat = 0;    // index into TraceModel::names ("kernel", "memcpy", "token", ...)
  int32_t depth = 0;  // nesting level inside its track (0 = outermost)
};

struct TraceTrack {
  std::string label;             // "GPU 0 / stream 7"
  bool gpu = false;
  int64_t sort_pid = 0, sort_tid = 0;
  std::vector<TraceSpan> spans;  // (n_spans) sorted by start_us
  int32_t depth_count = 1;       // rows this track needs
  double max_dur_us = 0;         // longest span (window queries look back this far)
};

struct TraceCounter {
  std::string label;          // "memory: arena_used_bytes"
  std::vector<double> t_us;   // (n_points) ascending
  std::vector<double> value;  // (n_points)
};

struct TraceModel {
  std::vector<TraceTrack> tracks;      // CPU tracks first, then GPU, each by (pid, tid)
  std::vector<TraceCounter> counters;
  std::vector<std::string> names;      // interned event names and categories
  double t_min_us = 0, t_max_us = 0;   // extent of every span and counter point
  size_t span_count() const;
};

// Parses a trace; events that cannot be used are skipped (among them times beyond
// +-2^53 us, which a double no longer holds to the microsecond). `warnings` (optional)
// gets validate_chrome_trace's messages. Throws Error when the top level is
// neither an event array nor an object with a "traceEvents" array.
TraceModel trace_from_json(const nlohmann::json& j, std::vector<std::string>* warnings = nullptr);

struct TimeWindow {
  double t0_us = 0, t1_us = 1;
  double width() const { return t1_us - t0_us; }
};

// The whole trace, with a little margin; a 1 us window for an empty trace.
TimeWindow full_window(const TraceModel& m);
// Zoom by `factor` (< 1 zooms in) keeping `anchor_us` under the cursor; the
// window stays inside `bounds` and at least 1 ns wide (wider at times so large that
// a double cannot split 1 ns: at least 16 of its steps there).
TimeWindow zoom_window(TimeWindow w, double anchor_us, double factor, TimeWindow bounds);
// Shift by delta_us, clamped to `bounds`.
TimeWindow pan_window(TimeWindow w, double delta_us, TimeWindow bounds);

struct TraceBox {
  int32_t track = 0;
  int32_t depth = 0;
  float x0 = 0, x1 = 0;  // pixels from the left edge of the timeline
  int32_t name = 0;      // of the first span in the box
  int32_t cat = 0;
  int32_t count = 1;     // spans in the box (> 1: merged because they were sub-pixel)
  size_t span = 0;       // index of the first span in its track
};

struct TraceFrame {
  std::vector<TraceBox> boxes;  // by track, then start
  size_t spans_visible = 0;     // spans overlapping the window
};

// Boxes of the spans overlapping `w`, scaled to `width_px` pixels. Spans
// narrower than min_px that touch the previous box of the same row are merged
// into it, so a frame has O(width_px) boxes per row whatever the trace size.
TraceFrame build_trace_frame(const TraceModel& m, TimeWindow w, float width_px, float min_px = 2.0f);

}  // namespace moebench::ui
