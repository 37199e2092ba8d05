// file_text.h: reading the files the dashboard opens — plain or gzip-compressed
// (the profiler's traces and results are often committed as .json.gz) — and
// parsing them as JSON, with every problem as one line naming the file.
#pragma once
#include <nlohmann/json.hpp>

#include <string>

namespace moebench::ui {

// The file's bytes; a gzip stream (magic 1f 8b, any extension) is inflated,
// concatenated members included. Throws Error "PATH: ..." on a missing file or a
// corrupt or truncated gzip stream.
std::string read_text_maybe_gzip(const std::string& path);

// read_text_maybe_gzip + nlohmann::json::parse; throws Error
// "PATH: invalid JSON at byte N: ..." (the byte counts in the inflated text).
nlohmann::json read_json_file(const std::string& path);

}  // namespace moebench::ui
