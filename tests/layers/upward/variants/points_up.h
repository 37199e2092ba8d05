// points_up.h: a policy header that reaches up into the engine; check_layers.sh must reject it.
#pragma once
#include "common/error.h"
#include "engine/engine.h"
