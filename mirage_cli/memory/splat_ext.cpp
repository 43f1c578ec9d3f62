// Compiled twin of mirage_cli.memory.splat.splat_patches (CPU, one thread): the same fp32 operations
// in the same order (no FMA: built with -ffp-contract=off), the same footprint rules and the same
// deterministic z-buffer (smallest z-bits << 32 | key, then smallest owner), so it returns the same
// bits as the pure-torch path. One pass over the points per frame, no temporaries per point. Frames
// are independent z-buffers, so they run in parallel (torch's intra-op threads) without changing a bit.
#include <torch/extension.h>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

static inline float nan_to_num_clamp(float r, float lo, float hi) {
  // torch: r.nan_to_num(0.5).clamp(lo, hi) with lo > 0. Plain comparisons, not std::fmin / fmax,
  // which are library calls here (their NaN rules keep the compiler from inlining them); r is not
  // NaN after the first test, so both give the same value.
  if (std::isnan(r)) r = 0.5f;
  else if (std::isinf(r)) r = r > 0 ? std::numeric_limits<float>::max() : -std::numeric_limits<float>::max();
  if (r < lo) r = lo;
  return r > hi ? hi : r;
}

static inline float ceil_f(float x) {
  // Exact std::ceil for every float, inlined: without SSE4.1 std::ceil is a libm call per use, the
  // largest single cost of the loop. |x| >= 2**23 (or inf, NaN) is already integral and returned
  // as is; otherwise truncate and step up. The sign of a zero result may differ from std::ceil,
  // which no caller sees (every result is converted to an integer or compared).
  if (!(std::fabs(x) < 8388608.0f)) return x;
  const float t = (float)(int32_t)x;
  return t < x ? t + 1.0f : t;
}

static inline int64_t cell_bound(float x, int64_t n) {
  // torch: ceil(x).clamp(-1, n + 1).long().clamp(0, n). A NaN ends at 0 either way (torch casts
  // NaN to an out-of-range integer that the last clamp takes to 0; here it is taken to -1 first).
  float c = ceil_f(x);
  if (!(c > -1.0f)) c = -1.0f;
  const float top = (float)(n + 1);
  if (c > top) c = top;
  const int64_t l = (int64_t)c;
  return l < 0 ? 0 : (l > n ? n : l);
}

std::vector<torch::Tensor> splat_patches_cpu(torch::Tensor points, torch::Tensor axes, torch::Tensor key,
                                             torch::Tensor w2c, torch::Tensor K, torch::Tensor bounds,
                                             torch::Tensor blocks, torch::Tensor block_start, int64_t block,
                                             int64_t h, int64_t w, double max_radius, int64_t owner_offset,
                                             bool patch, double margin) {
  // blocks: the visible blocks of every frame, concatenated (frame t's are
  // blocks[block_start[t] : block_start[t + 1]]); block b holds the points [b * block, (b + 1) * block).
  // The cull is conservative (it only skips points the per-point test below would drop), so it
  // changes no bit; the order of the points does not matter to the z-buffer either.
  const int64_t N = points.size(0), T = w2c.size(0), hw = h * w;
  auto index = torch::full({T, h, w}, -1, torch::kInt64);
  auto depth = torch::zeros({T, h, w}, torch::kFloat32);
  const float* P = points.data_ptr<float>();
  const float* A = patch ? axes.data_ptr<float>() : nullptr;
  const int64_t* KEY = key.data_ptr<int64_t>();
  const float* R = w2c.data_ptr<float>();
  const float* KK = K.data_ptr<float>();
  const float* B = bounds.data_ptr<float>();
  const int64_t* BL = blocks.data_ptr<int64_t>();
  const int64_t* BS = block_start.data_ptr<int64_t>();
  int64_t* IDX = index.data_ptr<int64_t>();
  float* DEP = depth.data_ptr<float>();
  const float m = (float)max_radius, lim = (float)(1.0 + margin);
  const int64_t kMax = std::numeric_limits<int64_t>::max();
  at::parallel_for(0, T, 1, [&](int64_t t_begin, int64_t t_end) {
  std::vector<int64_t> best(hw), owner(hw);
  for (int64_t t = t_begin; t < t_end; ++t) {
    std::fill(best.begin(), best.end(), kMax);
    std::fill(owner.begin(), owner.end(), kMax);
    const float* r = R + 16 * t;
    const float fx = KK[9 * t + 0], cx = KK[9 * t + 2], fy = KK[9 * t + 4], cy = KK[9 * t + 5];
    const float x_lo = B[4 * t], x_hi = B[4 * t + 1], y_lo = B[4 * t + 2], y_hi = B[4 * t + 3];
    auto put = [&](int64_t cell, int64_t val, int64_t own) {
      if (val < best[cell]) { best[cell] = val; owner[cell] = own; }
      else if (val == best[cell] && own < owner[cell]) owner[cell] = own;
    };
    for (int64_t q = BS[t]; q < BS[t + 1]; ++q) {
    const int64_t p_end = std::min(N, (BL[q] + 1) * block);
    for (int64_t p = BL[q] * block; p < p_end; ++p) {
      const float X = P[3 * p], Y = P[3 * p + 1], Z = P[3 * p + 2];
      const float xc = r[0] * X + r[1] * Y + r[2] * Z + r[3];
      const float yc = r[4] * X + r[5] * Y + r[6] * Z + r[7];
      const float z = r[8] * X + r[9] * Y + r[10] * Z + r[11];
      if (!((z > 0) & (xc > x_lo * z) & (xc < x_hi * z) & (yc > y_lo * z) & (yc < y_hi * z))) continue;
      const float xn = xc / z, yn = yc / z;
      const float u = xn * fx + cx, v = yn * fy + cy;
      float a = 0, b = 0, c = 0, d = 0, ru, rv;
      if (patch) {
        float J[4];
        for (int q = 0; q < 2; ++q) {
          const float ax = A[6 * p + 3 * q], ay = A[6 * p + 3 * q + 1], az = A[6 * p + 3 * q + 2];
          const float cxk = r[0] * ax + r[1] * ay + r[2] * az;
          const float cyk = r[4] * ax + r[5] * ay + r[6] * az;
          const float czk = r[8] * ax + r[9] * ay + r[10] * az;
          J[2 * q] = fx * (cxk - xn * czk) / z;
          J[2 * q + 1] = fy * (cyk - yn * czk) / z;
        }
        a = J[0]; b = J[2]; c = J[1]; d = J[3];
        ru = nan_to_num_clamp(std::fabs(a) + std::fabs(b), 0.5f, m);
        rv = nan_to_num_clamp(std::fabs(c) + std::fabs(d), 0.5f, m);
      } else {
        ru = rv = nan_to_num_clamp(0.5f, 0.5f, m);
      }
      const int64_t jc0 = cell_bound(u - ru - 0.5f, w), jc1 = cell_bound(u + ru - 0.5f, w);
      const int64_t ic0 = cell_bound(v - rv - 0.5f, h), ic1 = cell_bound(v + rv - 0.5f, h);
      const int64_t si = ic1 - ic0, sj = jc1 - jc0;
      const int64_t span = std::min(si, sj) > 0 ? std::max(si, sj) : 0;
      if (span == 0 || span > 65) continue;  // the torch path's span groups end at 65
      int32_t zb;
      std::memcpy(&zb, &z, 4);
      const int64_t val = ((int64_t)(uint32_t)zb << 32) | (KEY[p] & 0x7FFFFFFF);
      const int64_t own = p + owner_offset;
      if (span == 1) { put(ic0 * w + jc0, val, own); continue; }
      float ia = 0, ib = 0, ic = 0, id = 0;
      int64_t hi_ = 0, hj_ = 0;
      if (patch) {
        const float det = a * d - b * c;
        if (std::fabs(det) > 1e-12f) {
          const float inv = (1.0f / det) * 1.0f;
          ia = d * inv; ib = -b * inv; ic = -c * inv; id = a * inv;
        } else {
          ia = ib = ic = id = 1e12f;
        }
        hi_ = (int64_t)ceil_f(v - 1.0f);
        hj_ = (int64_t)ceil_f(u - 1.0f);
      }
      for (int64_t ci = ic0; ci < ic1; ++ci) {
        for (int64_t cj = jc0; cj < jc1; ++cj) {
          if (patch) {
            const float dx = ((float)cj + 0.5f) - u, dy = ((float)ci + 0.5f) - v;
            const float al = ia * dx + ib * dy, be = ic * dx + id * dy;
            if (!((std::fabs(al) <= lim && std::fabs(be) <= lim) || (ci == hi_ && cj == hj_))) continue;
          }
          put(ci * w + cj, val, own);
        }
      }
    }
    }
    int64_t* idx = IDX + t * hw;
    float* dep = DEP + t * hw;
    for (int64_t k = 0; k < hw; ++k) {
      if (owner[k] == kMax) continue;
      idx[k] = owner[k];
      const int32_t zb = (int32_t)(best[k] >> 32);
      std::memcpy(dep + k, &zb, 4);
    }
  }
  });
  return {index, depth};
}
