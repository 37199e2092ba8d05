// build_info.h: what the binary was built from. build_commit() is generated at every
// build (cmake/build_info.cmake) so results never carry a stale commit; "-dirty" marks
// a tree with uncommitted changes to tracked files.
#pragma once

namespace moebench {
const char* build_commit();
}
