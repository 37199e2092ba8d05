// cpu_isa.cpp: see cpu_isa.h.
#include "engine/ops/cpu_isa.h"

#include "common/env.h"
#include "common/error.h"

namespace moebench::cpu {

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::generic: return "generic";
    case CpuIsa::avx2: return "avx2";
    case CpuIsa::avx512: return "avx512";
    case CpuIsa::avx512_bf16: return "avx512_bf16";
  }
  return "?";
}

CpuIsa parse_cpu_isa(const std::string& s, const std::string& what) {
  for (CpuIsa isa : kCpuIsas)
    if (s == cpu_isa_name(isa)) return isa;
  fail("{}={}: expected one of auto|generic|avx2|avx512|avx512_bf16", what, s);
}

CpuFeatures host_cpu_features() {
  __builtin_cpu_init();
  CpuFeatures f;
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.f16c = __builtin_cpu_supports("f16c");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512bf16 = __builtin_cpu_supports("avx512bf16");
  f.avx512vnni = __builtin_cpu_supports("avx512vnni");
  f.amx = __builtin_cpu_supports("amx-tile");
  return f;
}

std::string cpu_isa_missing(CpuIsa isa, const CpuFeatures& have) {
  std::string m;
  auto need = [&m](bool ok, const char* name) {
    if (ok) return;
    if (!m.empty()) m += ',';
    m += name;
  };
  if (isa == CpuIsa::generic) return m;
  need(have.avx2, "avx2");
  need(have.fma, "fma");
  need(have.f16c, "f16c");
  if (isa == CpuIsa::avx2) return m;
  need(have.avx512f, "avx512f");
  need(have.avx512bw, "avx512bw");
  need(have.avx512vl, "avx512vl");
  if (isa == CpuIsa::avx512) return m;
  need(have.avx512bf16, "avx512bf16");
  return m;
}

CpuIsa best_cpu_isa(const CpuFeatures& have) {
  CpuIsa best = CpuIsa::generic;
  for (CpuIsa isa : kCpuIsas)
    if (cpu_isa_missing(isa, have).empty()) best = isa;
  return best;
}

CpuIsa select_cpu_isa(const std::string& requested, const CpuFeatures& have, const std::string& what) {
  if (requested.empty() || requested == "auto") return best_cpu_isa(have);
  const CpuIsa isa = parse_cpu_isa(requested, what);
  const std::string missing = cpu_isa_missing(isa, have);
  if (!missing.empty())
    fail("{}={}: this CPU lacks {} (the best it runs is {})", what, requested, missing,
         cpu_isa_name(best_cpu_isa(have)));
  return isa;
}

CpuIsa cpu_isa_from_env() {
  return select_cpu_isa(env_str("MOEBENCH_CPU_ISA"), host_cpu_features(), "MOEBENCH_CPU_ISA");
}

}  // namespace moebench::cpu
