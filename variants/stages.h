// stages.h: the optimisation-stage presets of the optimisation guide:
// baseline, P0, P1, P2 — each a bundle of EngineSettings, one registry entry each.
#pragma once
#include <string>
#include <vector>

#include "model/settings.h"

namespace moebench {

struct StagePreset {
  std::string name;
  std::string description;
  EngineSettings settings;
};

const std::vector<StagePreset>& stage_presets();
// The presets' names joined by `sep` ("baseline|P0|..."), for help texts and messages.
std::string stage_list(const char* sep = "|");
// Throws Error listing the stages when `name` is unknown.
EngineSettings stage_settings(const std::string& name);

}  // namespace moebench
