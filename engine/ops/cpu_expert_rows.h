// cpu_expert_rows.h: the fp32 row kernel of the CPU expert, written once over a vector
// type and included once per ISA (no include guard, on purpose). The including file
// defines MB_CPU_TARGET (the function attribute, e.g. __attribute__((target("avx2"))))
// and, in the namespace it includes this in, a struct V with
//   kLanes; vec; zero(); set1(f); loadu(const float*); mul(a, b); fmadd(a, b, c) = a*b+c;
//   hsum(v);
//   bf16(const uint8_t*)     kLanes bf16 weights as floats
//   i8(const uint8_t*)       kLanes int8 codes as floats
//   i4(const uint8_t*, z)    kLanes/2 bytes of packed nibbles, u - z as floats
//   e4m3(const uint8_t*)     kLanes e4m3 codes as floats times 2^-8 (the scale takes 2^8)
// all marked MB_CPU_TARGET. It defines row_block_impl, an expert_detail::RowBlockFn.
// Per row: groups of 128 columns (int4, fp8: one scale each; bf16 and int8 one group)
// are loaded kLanes at a time, dequantised, scaled and FMAed into one accumulator per
// token; a group's last cols % kLanes columns go through weight_value.

template <QuantFormat F, int NT>
MB_CPU_TARGET void row_dot(const CpuMatrix& w, int64_t r, const float* x, float* y) {
  using expert_detail::groups_of;
  const int64_t cols = w.cols, rows = w.rows;
  constexpr int L = V::kLanes;
  typename V::vec acc[NT];
  float tail[NT];
  for (int t = 0; t < NT; ++t) {
    acc[t] = V::zero();
    tail[t] = 0.0f;
  }
  const int64_t group = (F == QuantFormat::int4 || F == QuantFormat::fp8) ? 128 : cols;
  for (int64_t c0 = 0; c0 < cols; c0 += group) {
    const int64_t c1 = c0 + group < cols ? c0 + group : cols;
    float s = 1.0f;
    int z = 8;
    if constexpr (F == QuantFormat::int4) {
      const int64_t g = r * groups_of(cols) + c0 / kInt4Group;
      s = expert_detail::load_bf16_f32(w.scale, g);
      if (w.zero) z = w.zero[g];
    } else if constexpr (F == QuantFormat::fp8) {
      s = expert_detail::load_f32(w.scale, (r / kFp8Block) * groups_of(cols) + c0 / kFp8Block) * 256.0f;
    }
    const typename V::vec sv = V::set1(s);
    int64_t c = c0;
    for (; c + L <= c1; c += L) {
      typename V::vec wv;
      if constexpr (F == QuantFormat::bf16) {
        wv = V::bf16(w.q + 2 * (r * cols + c));
      } else if constexpr (F == QuantFormat::int8) {
        wv = V::i8(w.q + r * cols + c);
      } else if constexpr (F == QuantFormat::int4) {
        wv = V::mul(V::i4(w.q + r * (cols / 2) + c / 2, z), sv);
      } else {
        wv = V::mul(V::e4m3(w.q + r * cols + c), sv);
      }
      for (int t = 0; t < NT; ++t) acc[t] = V::fmadd(wv, V::loadu(x + t * cols + c), acc[t]);
    }
    for (; c < c1; ++c) {
      const float wc = expert_detail::weight_value<F>(w, r, c);
      for (int t = 0; t < NT; ++t) tail[t] += wc * x[t * cols + c];
    }
  }
  const float rs = F == QuantFormat::int8 ? expert_detail::load_f32(w.scale, r) : 1.0f;
  for (int t = 0; t < NT; ++t) y[t * rows + r] = (V::hsum(acc[t]) + tail[t]) * rs;
}

template <QuantFormat F>
MB_CPU_TARGET void rows_of_format(const CpuMatrix& w, int64_t r0, int64_t r1, const float* x, int n, float* y) {
  for (int t0 = 0; t0 < n; t0 += kCpuExpertTokenBlock) {
    const int nt = n - t0 < kCpuExpertTokenBlock ? n - t0 : kCpuExpertTokenBlock;
    const float* xt = x + static_cast<int64_t>(t0) * w.cols;
    float* yt = y + static_cast<int64_t>(t0) * w.rows;
    for (int64_t r = r0; r < r1; ++r) {
      switch (nt) {
        case 1: row_dot<F, 1>(w, r, xt, yt); break;
        case 2: row_dot<F, 2>(w, r, xt, yt); break;
        case 3: row_dot<F, 3>(w, r, xt, yt); break;
        case 4: row_dot<F, 4>(w, r, xt, yt); break;
        case 5: row_dot<F, 5>(w, r, xt, yt); break;
        case 6: row_dot<F, 6>(w, r, xt, yt); break;
        case 7: row_dot<F, 7>(w, r, xt, yt); break;
        default: row_dot<F, 8>(w, r, xt, yt); break;
      }
    }
  }
}
static_assert(kCpuExpertTokenBlock == 8, "rows_of_format instantiates row_dot for 1..8 tokens");

MB_CPU_TARGET void row_block_impl(const CpuMatrix& w, int64_t r0, int64_t r1, const void* xv, int n, float* y) {
  const float* x = static_cast<const float*>(xv);
  switch (w.format) {
    case QuantFormat::bf16: rows_of_format<QuantFormat::bf16>(w, r0, r1, x, n, y); break;
    case QuantFormat::int8: rows_of_format<QuantFormat::int8>(w, r0, r1, x, n, y); break;
    case QuantFormat::int4: rows_of_format<QuantFormat::int4>(w, r0, r1, x, n, y); break;
    case QuantFormat::fp8: rows_of_format<QuantFormat::fp8>(w, r0, r1, x, n, y); break;
  }
}
