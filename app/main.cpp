// main.cpp: main() of `moebench`; the CLI front it runs is cli/cli_main.cpp, and the
// subcommands are the app/cmd_*.cpp files that register themselves (cli/command.h).
#include "cli/command.h"

int main(int argc, char** argv) { return moebench::app::cli_main(argc, argv); }
