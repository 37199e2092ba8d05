// log.h: leveled logging to stderr (stdout stays clean for results).
// Level comes from --log-level or MOEBENCH_LOG_LEVEL: error|warn|info|debug.
#pragma once
#include <fmt/format.h>

#include <string>

namespace moebench::log {

enum class Level { error = 0, warn = 1, info = 2, debug = 3 };

Level level();
void set_level(Level l);
// Parses "error|warn|info|debug"; throws Error naming the bad value otherwise.
Level parse_level(const std::string& s);
// Applies MOEBENCH_LOG_LEVEL if set (called once by the CLI).
void init_from_env();
void write(Level l, const std::string& msg);

inline bool enabled(Level l) { return static_cast<int>(l) <= static_cast<int>(level()); }

template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... a) {
  if (enabled(Level::error)) write(Level::error, fmt::format(f, std::forward<Args>(a)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... a) {
  if (enabled(Level::warn)) write(Level::warn, fmt::format(f, std::forward<Args>(a)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... a) {
  if (enabled(Level::info)) write(Level::info, fmt::format(f, std::forward<Args>(a)...));
}
template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... a) {
  if (enabled(Level::debug)) write(Level::debug, fmt::format(f, std::forward<Args>(a)...));
}

}  // namespace moebench::log
