// cpu_expert_rows.h: the fp32 row kernel of the CPU expert, written once over a vector
// type and included once per ISA (no include guard, on purpose). The including file
// defines MB_CPU_TARGET (the function attribute, e.g. __attribute__((target("avx2"))))
// and, in the namespace it includes this in, a struct V with
//   kLanes; kRows (rows that share each load of x: 2 where the registers hold
//   2 x 8 accumulators); vec; zero(); set1(f); loadu(const float*); mul(a, b); fmadd(a, b, c) = a*b+c;
//   hsum(v);
//   bf16(const uint8_t*)     kLanes bf16 weights as floats
//   i8(const uint8_t*)       kLanes int8 codes as floats
//   i4(const uint8_t*, z)    kLanes/2 bytes of packed nibbles, u - z as floats
//   e4m3(const uint8_t*)     kLanes e4m3 codes as floats times 2^-8 (the scale takes 2^8)
// all marked MB_CPU_TARGET. It defines row_block_impl, an expert_detail::RowBlockFn.
// Per kRows rows: groups of 128 columns (int4, fp8: one scale each; bf16 and int8 one group)
// are loaded kLanes at a time, dequantised, scaled and FMAed into one accumulator per
// row and token; a group's last cols % kLanes columns go through weight_value.

template <QuantFormat F, int R, int NT>
MB_CPU_TARGET void row_dot(const CpuMatrix& w, int64_t r0, const float* x, float* y) {
  const int64_t cols = w.cols, rows = w.rows;
  const int64_t ld = expert_detail::row_stride(w), ng = expert_detail::scale_stride(w);  // CpuMatrix's strides
  constexpr int L = V::kLanes;
  typename V::vec acc[R][NT];
  float tail[R][NT];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) {
      acc[i][t] = V::zero();
      tail[i][t] = 0.0f;
    }
  const int64_t group = (F == QuantFormat::int4 || F == QuantFormat::fp8) ? 128 : cols;
  for (int64_t c0 = 0; c0 < cols; c0 += group) {
    const int64_t c1 = c0 + group < cols ? c0 + group : cols;
    typename V::vec sv[R];
    int z[R];
    for (int i = 0; i < R; ++i) {
      const int64_t r = r0 + i;
      float s = 1.0f;
      z[i] = 8;
      if constexpr (F == QuantFormat::int4) {
        const int64_t g = r * ng + c0 / kInt4Group;
        s = expert_detail::load_bf16_f32(w.scale, g);
        if (w.zero) z[i] = w.zero[g];
      } else if constexpr (F == QuantFormat::fp8) {
        s = expert_detail::load_f32(w.scale, (r / kFp8Block) * ng + c0 / kFp8Block) * 256.0f;
      }
      sv[i] = V::set1(s);
    }
    int64_t c = c0;
    for (; c + L <= c1; c += L) {
      typename V::vec wv[R];
      for (int i = 0; i < R; ++i) {
        const int64_t r = r0 + i;
        if constexpr (F == QuantFormat::bf16) {
          wv[i] = V::bf16(w.q + 2 * (r * ld + c));
        } else if constexpr (F == QuantFormat::int8) {
          wv[i] = V::i8(w.q + r * ld + c);
        } else if constexpr (F == QuantFormat::int4) {
          wv[i] = V::mul(V::i4(w.q + r * (ld / 2) + c / 2, z[i]), sv[i]);
        } else {
          wv[i] = V::mul(V::e4m3(w.q + r * ld + c), sv[i]);
        }
      }
      for (int t = 0; t < NT; ++t) {
        const typename V::vec xv = V::loadu(x + t * cols + c);  // one load for R rows
        for (int i = 0; i < R; ++i) acc[i][t] = V::fmadd(wv[i], xv, acc[i][t]);
      }
    }
    for (; c < c1; ++c)
      for (int i = 0; i < R; ++i) {
        const float wc = expert_detail::weight_value<F>(w, r0 + i, c);
        for (int t = 0; t < NT; ++t) tail[i][t] += wc * x[t * cols + c];
      }
  }
  for (int i = 0; i < R; ++i) {
    const float rs = F == QuantFormat::int8 ? expert_detail::load_f32(w.scale, r0 + i) : 1.0f;
    for (int t = 0; t < NT; ++t) y[t * rows + r0 + i] = (V::hsum(acc[i][t]) + tail[i][t]) * rs;
  }
}

// Rows r0..r1 for tokens t0.. (nt of them): V::kRows rows at a time, then one.
template <QuantFormat F, int NT>
MB_CPU_TARGET void rows_tokens(const CpuMatrix& w, int64_t r0, int64_t r1, const float* x, float* y) {
  int64_t r = r0;
  for (; r + V::kRows <= r1; r += V::kRows) row_dot<F, V::kRows, NT>(w, r, x, y);
  for (; r < r1; ++r) row_dot<F, 1, NT>(w, r, x, y);
}

template <QuantFormat F>
MB_CPU_TARGET void rows_of_format(const CpuMatrix& w, int64_t r0, int64_t r1, const float* x, int n, float* y) {
  for (int t0 = 0; t0 < n; t0 += kCpuExpertTokenBlock) {
    const int nt = n - t0 < kCpuExpertTokenBlock ? n - t0 : kCpuExpertTokenBlock;
    const float* xt = x + static_cast<int64_t>(t0) * w.cols;
    float* yt = y + static_cast<int64_t>(t0) * w.rows;
    expert_detail::with_token_count(nt, [&](auto k) { rows_tokens<F, decltype(k)::value>(w, r0, r1, xt, yt); });
  }
}

MB_CPU_TARGET void row_block_impl(const CpuMatrix& w, int64_t r0, int64_t r1, const void* xv, int n, float* y) {
  const float* x = static_cast<const float*>(xv);
  switch (w.format) {
    case QuantFormat::bf16: rows_of_format<QuantFormat::bf16>(w, r0, r1, x, n, y); break;
    case QuantFormat::int8: rows_of_format<QuantFormat::int8>(w, r0, r1, x, n, y); break;
    case QuantFormat::int4: rows_of_format<QuantFormat::int4>(w, r0, r1, x, n, y); break;
    case QuantFormat::fp8: rows_of_format<QuantFormat::fp8>(w, r0, r1, x, n, y); break;
  }
}
