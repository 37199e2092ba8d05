// dashboard_main.cpp: main() of `moebench-dashboard`, the executable that holds the
// GL/GLFW dashboard (`moebench dashboard` runs it). It shares moebench's CLI front,
// with only the `dashboard` command registered.
#include "cli/command.h"

int main(int argc, char** argv) { return moebench::app::cli_main(argc, argv); }
