// build_info.h: what the binary was built from. build_commit() is generated at every
// build (cmake/build_info.cmake) so results never carry a stale commit; "-dirty" marks
// a tree with uncommitted changes to tracked files.
#pragma once

namespace moebench {
// The version every results file and `moebench --version` names (no release yet: the
// commit identifies the build).
inline constexpr const char* kVersion = "0.2.0";
const char* build_commit();
}
