// integrity.h: the two checks of the profiler's own cost and truthfulness that
// `moebench profile-check` runs on the GPU:
//
//  1. Overhead of the always-on counters. The same model decodes in rounds; in each
//     round every arm (profiler off, counters on, ...) runs one generation, the arm
//     order rotating from round to round, so drift (clocks, thermals) hits every arm
//     alike. Per round and arm: the mean decode step (ns). The overhead of an arm is
//     the per-round paired relative difference (arm - off) / off, summarised by its
//     mean, standard deviation and a 95% confidence half-width (Student t).
//
//  2. CUPTI against CUDA events. For every decode step: the CUDA-event time on the
//     compute stream (event before the step's first launch, event after the host got
//     the step's token back), and, from CUPTI records whose start lies in the step's
//     host window [cpu_start, cpu_end): the sum of kernel + memcpy + memset
//     durations, the union of those intervals (GPU busy) and the span from the first
//     start to the last end. sum / event is the agreement to check (within 10%); span /
//     event checks that the two clocks tell the same story.
//
// Pure functions over plain numbers and GpuEvents: tested on the CPU.
#pragma once
#include <cstdint>
#include <vector>

#include "profiler/cupti.h"

namespace moebench::profiler {

// Per-round mean decode step of one arm and of the reference arm (off), ns.
struct PairedOverhead {
  int n_rounds = 0;
  double mean_pct = 0;        // mean over rounds of (arm - off) / off, in %
  double stddev_pct = 0;      // sample standard deviation of that, in %
  double ci95_half_pct = 0;   // t(0.975, n-1) * stddev / sqrt(n); 0 when n < 2
  double median_pct = 0;      // median over rounds of the paired differences, in %
  double arm_mean_ns = 0;     // mean of the arm's per-round means
  double off_mean_ns = 0;
};

// Both vectors (n_rounds), same order; throws Error when sizes differ, a round
// is missing, or an off value is not positive.
PairedOverhead paired_overhead(const std::vector<double>& off_round_ns, const std::vector<double>& arm_round_ns);

// Two-sided 97.5% quantile of Student's t with `dof` degrees of freedom (table to
// 30, then 1.96 from 120 on, interpolated in 1/dof between).
double student_t975(int dof);

// One decode step as the host and the CUDA events saw it.
struct StepWindow {
  int64_t cpu_start_ns = 0;  // profiler clock, before the first launch of the step
  int64_t cpu_end_ns = 0;    // after the step's result reached the host
  int64_t event_ns = 0;      // CUDA-event elapsed time of the step on the compute stream
};

struct StepAgreement {
  int64_t event_ns = 0;
  int64_t device_sum_ns = 0;  // kernels + copies + memsets starting in the window, summed
  int64_t kernel_ns = 0;      // of which kernels
  int64_t copy_ns = 0;        // of which memcpys
  int64_t memset_ns = 0;      // of which memsets
  int64_t busy_ns = 0;        // union of those intervals
  int64_t span_ns = 0;        // last end - first start; 0 when none
  int64_t n_kernels = 0, n_copies = 0, n_memsets = 0;
};

// One entry per window, in order. Events may be in any order.
std::vector<StepAgreement> step_agreement(const std::vector<GpuEvent>& events, const std::vector<StepWindow>& steps);

// Distribution of a ratio over steps (num / den per step; steps with den <= 0 skipped).
struct RatioSummary {
  int64_t n = 0;
  double median = 0, p10 = 0, p90 = 0, min = 0, max = 0;
  double of_totals = 0;  // sum(num) / sum(den)
};
RatioSummary ratio_summary(const std::vector<int64_t>& num, const std::vector<int64_t>& den);

}  // namespace moebench::profiler
