// launch_env.h: the launch knobs of the decode kernels that the environment sets, for
// measuring one build both ways: MOEBENCH_PDL (programmatic dependent launch, pdl.h) and
// MOEBENCH_GEMV_PREFETCH (the one-row GEMV's default shape prefetches that many
// iterations ahead, ops.cuh GemvShape). Each is read once; a value outside its list is an
// Error naming the variable. Host C++.
#pragma once
#include <initializer_list>

namespace moebench::cuda {

// The integer value of environment variable `name`, one of `allowed`; `unset` when unset
// or empty.
int env_choice(const char* name, std::initializer_list<int> allowed, int unset);

// MOEBENCH_GEMV_PREFETCH: 0 (unset: off), 2 or 4.
int gemv_prefetch_from_env();

}  // namespace moebench::cuda
