// cpu_isa.h: which x86-64 vector instruction set the CPU expert kernels run with
// (engine/ops/cpu_expert.h), picked at run time from what the CPU reports, and the
// MOEBENCH_CPU_ISA knob that forces a lower one (tests run every path on one machine).
//
//   generic      portable C++ (SSE2 at most): any x86-64
//   avx2         AVX2 + FMA + F16C, fp32 FMA
//   avx512       AVX-512 F/BW/VL, fp32 FMA
//   avx512_bf16  avx512 plus AVX512_BF16: bf16 weights through vdpbf16ps with the
//                activations rounded to bf16; the quantised formats as avx512
//
// The binary is built for baseline x86-64; only the kernel functions carry
// target attributes, and they are called only when the CPU has what they need.
#pragma once
#include <string>

namespace moebench::cpu {

enum class CpuIsa { generic, avx2, avx512, avx512_bf16 };
constexpr CpuIsa kCpuIsas[] = {CpuIsa::generic, CpuIsa::avx2, CpuIsa::avx512, CpuIsa::avx512_bf16};

const char* cpu_isa_name(CpuIsa isa);  // "generic" | "avx2" | "avx512" | "avx512_bf16"
// Parses a name; throws Error naming `what`, the value and the choices.
CpuIsa parse_cpu_isa(const std::string& s, const std::string& what);

// The instruction-set extensions the kernels care about (and AMX, reported only).
struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512bf16 = false, avx512vnni = false;
  bool amx = false;  // AMX tiles (bf16/int8): no kernel uses them yet
};
CpuFeatures host_cpu_features();  // __builtin_cpu_supports (the OS-enabled state included)

// The extensions `isa` needs that `have` lacks, comma-separated; "" when it can run.
std::string cpu_isa_missing(CpuIsa isa, const CpuFeatures& have);
// The highest ISA `have` can run.
CpuIsa best_cpu_isa(const CpuFeatures& have);
// `requested` ("auto" = best) checked against `have`; throws Error in one line naming
// `what`, the value and the missing extensions when this CPU cannot run it.
CpuIsa select_cpu_isa(const std::string& requested, const CpuFeatures& have, const std::string& what);
// The ISA the kernels use by default: MOEBENCH_CPU_ISA (unset = auto) on this CPU.
// Checked once per call (the tests change the variable); throws Error as above.
CpuIsa cpu_isa_from_env();

}  // namespace moebench::cpu
