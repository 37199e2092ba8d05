// window.cpp: see window.h.
#include "ui/glue/window.h"

#define GLFW_INCLUDE_NONE
#include <GL/gl.h>
#include <GLFW/glfw3.h>
#include <imgui.h>
#include <imgui_impl_glfw.h>
#include <imgui_impl_opengl3.h>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#include <stb_image_write.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/error.h"

namespace moebench::ui {

namespace {

std::string g_glfw_error;  // last GLFW error text (GLFW reports through a C callback)

void on_glfw_error(int code, const char* text) { g_glfw_error = fmt::format("GLFW error {}: {}", code, text ? text : "?"); }

// Reads the back buffer (RGB, top row first).
std::vector<uint8_t> read_back(int w, int h) {
  std::vector<uint8_t> px(static_cast<size_t>(w) * static_cast<size_t>(h) * 3);
  glReadBuffer(GL_BACK);
  glPixelStorei(GL_PACK_ALIGNMENT, 1);
  glReadPixels(0, 0, w, h, GL_RGB, GL_UNSIGNED_BYTE, px.data());
  // GL's origin is the bottom-left; PNG's the top-left.
  size_t row = static_cast<size_t>(w) * 3;
  std::vector<uint8_t> tmp(row);
  for (int y = 0; y < h / 2; ++y) {
    uint8_t* a = px.data() + static_cast<size_t>(y) * row;
    uint8_t* b = px.data() + static_cast<size_t>(h - 1 - y) * row;
    std::copy(a, a + row, tmp.data());
    std::copy(b, b + row, a);
    std::copy(tmp.data(), tmp.data() + row, b);
  }
  return px;
}

bool blank(const std::vector<uint8_t>& px) {
  for (size_t i = 3; i + 2 < px.size(); i += 3)
    if (px[i] != px[0] || px[i + 1] != px[1] || px[i + 2] != px[2]) return false;
  return true;
}

struct GlfwSession {
  GLFWwindow* window = nullptr;
  bool imgui = false, glfw_backend = false, gl_backend = false;
  ~GlfwSession() {
    if (gl_backend) ImGui_ImplOpenGL3_Shutdown();
    if (glfw_backend) ImGui_ImplGlfw_Shutdown();
    if (imgui) ImGui::DestroyContext();
    if (window) glfwDestroyWindow(window);
    glfwTerminate();
  }
};

}  // namespace

int run_window(Dashboard& d, const WindowOptions& o) {
  glfwSetErrorCallback(on_glfw_error);
  if (!glfwInit())
    fail("cannot open a window ({}); without a display run it under Xvfb: xvfb-run -a moebench dashboard ...",
         g_glfw_error.empty() ? "glfwInit failed" : g_glfw_error);
  GlfwSession session;
  glfwWindowHint(GLFW_CONTEXT_VERSION_MAJOR, 3);
  glfwWindowHint(GLFW_CONTEXT_VERSION_MINOR, 0);
  if (!o.screenshot.empty()) glfwWindowHint(GLFW_RESIZABLE, GLFW_FALSE);
  session.window = glfwCreateWindow(o.width, o.height, "moebench dashboard", nullptr, nullptr);
  if (!session.window) fail("cannot create an OpenGL 3.0 window: {}", g_glfw_error);
  glfwMakeContextCurrent(session.window);
  glfwSwapInterval(o.screenshot.empty() ? 1 : 0);

  IMGUI_CHECKVERSION();
  ImGui::CreateContext();
  session.imgui = true;
  ImGuiIO& io = ImGui::GetIO();
  io.IniFilename = nullptr;  // the layout is tiled by the dashboard; View > Tile windows restores it
  ImGui::StyleColorsDark();
  ImGui::GetStyle().WindowRounding = 3;
  ImGui::GetStyle().FrameRounding = 2;
  session.glfw_backend = ImGui_ImplGlfw_InitForOpenGL(session.window, true);
  session.gl_backend = ImGui_ImplOpenGL3_Init("#version 130");
  if (!session.glfw_backend || !session.gl_backend) fail("cannot initialise the ImGui GLFW/OpenGL3 backends");

  for (int frame = 0; !glfwWindowShouldClose(session.window); ++frame) {
    if (o.screenshot.empty())
      glfwWaitEventsTimeout(1.0 / 30);  // live runs update without input
    else
      glfwPollEvents();
    ImGui_ImplOpenGL3_NewFrame();
    ImGui_ImplGlfw_NewFrame();
    if (!o.screenshot.empty()) ImGui::GetIO().MousePos = ImVec2(-FLT_MAX, -FLT_MAX);  // no hover tooltips in the picture
    ImGui::NewFrame();
    d.frame();
    ImGui::Render();
    int fw = 0, fh = 0;
    glfwGetFramebufferSize(session.window, &fw, &fh);
    glViewport(0, 0, fw, fh);
    glClearColor(0.08f, 0.08f, 0.10f, 1.0f);
    glClear(GL_COLOR_BUFFER_BIT);
    ImGui_ImplOpenGL3_RenderDrawData(ImGui::GetDrawData());
    if (!o.screenshot.empty() && frame + 1 >= std::max(1, o.frames)) {
      glFinish();
      std::vector<uint8_t> px = read_back(fw, fh);
      if (px.empty() || blank(px))
        fail("the screenshot is blank ({}x{}, every pixel the same colour): nothing was rendered", fw, fh);
      if (!stbi_write_png(o.screenshot.c_str(), fw, fh, 3, px.data(), fw * 3))
        fail("{}: cannot write the PNG", o.screenshot);
      std::fprintf(stderr, "wrote %s (%dx%d, after %d frames)\n", o.screenshot.c_str(), fw, fh, frame + 1);
      return 0;
    }
    glfwSwapBuffers(session.window);
  }
  return 0;
}

}  // namespace moebench::ui
