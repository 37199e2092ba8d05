// fuzz_config.cpp: fuzz target for config.json (load_config + validate_config, as
// the loader runs them). An accepted config must survive a round trip through
// config_to_json unchanged, and its derived sizes must compute without overflow
// (UBSan reports signed overflow).
#include <nlohmann/json.hpp>

#include "model/config.h"
#include "common/error.h"
#include "tests/fuzz/fuzz_util.h"

using namespace moebench;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input("config.json", data, size);
  try {
    ModelConfig c = load_config(path);
    validate_config(c, path);
    volatile int64_t sizes = c.total_params() + c.layer_dense_params() + c.expert_params() + c.q_dim() + c.kv_dim();
    (void)sizes;
    nlohmann::json j = config_to_json(c);
    ModelConfig back = config_from_json(j, path);
    fuzz::check(config_to_json(back) == j, "config changes in a round trip: " + j.dump());
  } catch (const Error&) {
  }
  return 0;
}
