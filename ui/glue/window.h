// window.h: the platform and render glue of the dashboard — a GLFW window, the
// ImGui GLFW + OpenGL3 backends (shipped in Debian's libimgui.a), the frame
// loop, and the screenshot: read the back buffer with glReadPixels after the
// last frame, refuse a blank image, write a PNG with stb_image_write.
#pragma once
#include <string>

#include "ui/views/dashboard.h"

namespace moebench::ui {

struct WindowOptions {
  int width = 1600;
  int height = 1000;
  std::string screenshot;  // "" : interactive until the window closes
  int frames = 3;          // frames rendered before the screenshot is taken
};

// Returns the process exit code; throws Error when no window can be opened
// (no display) or the screenshot is blank or cannot be written.
int run_window(Dashboard& d, const WindowOptions& o);

}  // namespace moebench::ui
