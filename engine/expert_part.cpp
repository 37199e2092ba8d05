// expert_part.cpp: see expert_part.h. Each part of quant_parts() is a 2D array (entries
// along the matrix's rows x entries along its columns); a cut of the matrix's rows or
// columns is a cut of that array at the entry it falls on, which must be a whole entry.
#include "engine/expert_part.h"

#include <utility>

#include "common/error.h"
#include "engine/dtype.h"

namespace moebench {

namespace {

// Matrix rows per entry along a part's first dimension, columns per entry along its
// second (0: the part has one entry per row whatever the columns: int8's row scales).
int64_t rows_per_entry(QuantFormat f, size_t part) { return f == QuantFormat::fp8 && part == 1 ? kFp8Block : 1; }
int64_t cols_per_entry(QuantFormat f, size_t part) {
  if (part == 0) return f == QuantFormat::int4 ? 8 : 1;  // int4 values: eight per int32
  if (f == QuantFormat::int8) return 0;
  return f == QuantFormat::int4 ? kInt4Group : kFp8Block;
}

// Entries [e0, e1) covering matrix lines [a, b) of n at `per` lines an entry: a must
// start an entry, b end one or be n.
std::pair<int64_t, int64_t> entries(int64_t a, int64_t b, int64_t n, int64_t per, int64_t count, QuantFormat f,
                                    const char* suffix, int64_t r0, int64_t r1, int64_t inter) {
  if (a % per != 0 || (b != n && b % per != 0))
    fail("expert part: rows [{}, {}) of a {} expert of {} rows: its {} cut only at multiples of {} rows or at the end",
         r0, r1, quant_format_name(f), inter, suffix, per);
  return {a / per, b == n ? count : b / per};
}

}  // namespace

bool expert_part_cuts_at(QuantFormat f, int64_t unit_rows) {
  if (unit_rows <= 0) return false;
  if (f == QuantFormat::int4 || f == QuantFormat::fp8) return unit_rows % 128 == 0;
  return true;
}

ExpertPartPlan expert_part_plan(const ExpertLayout& L, int64_t hidden, int64_t inter, int64_t r0, int64_t r1) {
  if (r0 < 0 || r1 <= r0 || r1 > inter)
    fail("expert part: rows [{}, {}) of an expert of {} rows: expected 0 <= r0 < r1 <= {}", r0, r1, inter, inter);
  const QuantFormat f = L.format;
  const bool zp = L.n_parts > 2;
  ExpertPartPlan plan;
  for (int m = 0; m < 3; ++m) {
    const bool by_rows = m < 2;  // w1, w3 (inter, hidden): rows; w2 (hidden, inter): columns
    const int64_t R = by_rows ? inter : hidden, C = by_rows ? hidden : inter;
    const auto parts = quant_parts(f, R, C, zp);
    if (static_cast<int>(parts.size()) != L.n_parts)
      fail("expert part: a {} layout of {} parts per matrix, quant_parts gives {}", quant_format_name(f), L.n_parts,
           parts.size());
    const auto packed = quant_parts(f, by_rows ? r1 - r0 : R, by_rows ? C : r1 - r0, zp);
    for (size_t p = 0; p < parts.size(); ++p) {
      const int64_t s0 = parts[p].shape[0], s1 = parts[p].shape[1];
      const uint64_t es = dtype_size(parts[p].dtype);
      const uint64_t row_bytes = static_cast<uint64_t>(s1) * es;
      if (L.bytes[m][p] != parts[p].nbytes())
        fail("expert part: the layout's matrix {} part {} holds {} bytes, quant_parts {}", m, p, L.bytes[m][p],
             parts[p].nbytes());
      PartCopy c;
      c.dst = plan.dst[m][p] = L.offset[m][p];
      if (by_rows) {
        const auto [e0, e1] = entries(r0, r1, R, rows_per_entry(f, p), s0, f, parts[p].suffix, r0, r1, inter);
        c.src = L.offset[m][p] + static_cast<uint64_t>(e0) * row_bytes;
        c.width = static_cast<uint64_t>(e1 - e0) * row_bytes;
      } else if (const int64_t per = cols_per_entry(f, p); per == 0) {
        c.src = L.offset[m][p];  // one scale per row of w2, whatever its columns: all of them
        c.width = parts[p].nbytes();
      } else {
        const auto [e0, e1] = entries(r0, r1, C, per, s1, f, parts[p].suffix, r0, r1, inter);
        c.src = L.offset[m][p] + static_cast<uint64_t>(e0) * es;
        c.src_pitch = row_bytes;
        c.width = static_cast<uint64_t>(e1 - e0) * es;
        c.height = static_cast<uint64_t>(s0);
      }
      if (c.width * c.height != packed[p].nbytes())
        fail("expert part: rows [{}, {}) of a {} expert: matrix {} part {} gathers {} bytes, its packed shape holds {}",
             r0, r1, quant_format_name(f), m, p, c.width * c.height, packed[p].nbytes());
      plan.bytes += c.width * c.height;
      plan.copies.push_back(c);
    }
  }
  return plan;
}

}  // namespace moebench
