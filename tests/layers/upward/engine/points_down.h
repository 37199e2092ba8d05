// points_down.h: an engine header that includes only layers below it; check_layers.sh accepts it.
#pragma once
#include "common/error.h"
#include "model/config.h"
#include "profiler/counters.h"
#include "variants/expert_cache.h"
