// paged_steps.h: a paged KV pool for the attention tests: m sequences' block tables of
// `width` blocks each (every block of the pool used once, in shuffled order), and one decode
// step per sequence (sequence 0 at position len - 1, the next at len / 2) with the pool
// slot its new key and value go to.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

struct PagedSteps {
  std::vector<int32_t> table, pos, seq_row, slot;
};

inline PagedSteps paged_steps(int m, int width, int block_size, int len, std::mt19937& rng) {
  PagedSteps p;
  p.table.resize(static_cast<size_t>(m) * width);
  for (int b = 0; b < m * width; ++b) p.table[b] = b;
  std::shuffle(p.table.begin(), p.table.end(), rng);
  for (int i = 0; i < m; ++i) {
    const int t = i == 0 ? len - 1 : len / 2;
    p.pos.push_back(t);
    p.seq_row.push_back(i);
    p.slot.push_back(p.table[static_cast<size_t>(i) * width + t / block_size] * block_size + t % block_size);
  }
  return p;
}
