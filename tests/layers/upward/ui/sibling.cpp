// sibling.cpp: the dashboard reaching into the CLI's folder (app/ and ui/ are siblings);
// check_layers.sh must reject it.
#include "app/model_options.h"
#include "cli/command.h"
