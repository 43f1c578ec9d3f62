// Compiled twin of mirage_cli.memory.splat.splat_patches (CPU): the same fp32 operations in the same
// order (no FMA: built with -ffp-contract=off), the same footprint rules and the same deterministic
// z-buffer (smallest z-bits << 32 | key, then smallest owner), so it returns the same bits as the
// pure-torch path. Frames are independent z-buffers, so they run in parallel (torch's intra-op
// threads) without changing a bit.
//
// Per frame, the points of each visible cull block go through two passes:
//   1. project: branch-free, one fixed sequence of fp32 operations per point over the whole block,
//      so the compiler vectorises it (the divisions and the cell bounds are most of the work);
//   2. rasterise: the points that pass go into the z-buffer, one 128-bit min per covered cell
//      (depth-key in the high word, owner in the low word: the same order as the two-step rule).
// Vector or scalar, each lane does the same IEEE operations, so a build with -march=native gives the
// same bits as a portable one.
#include <torch/extension.h>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <algorithm>
#include <memory>
#include <vector>

namespace {

constexpr int kLanes = 128;  // at most one cull block (CULL_BLOCK) per pass
using u128 = unsigned __int128;

inline float nan_to_num_clamp(float r, float lo, float hi) {
  // torch: r.nan_to_num(0.5).clamp(lo, hi) with lo > 0, as selects (vectorisable). +-inf clamps
  // like the largest finite value would.
  r = (r != r) ? 0.5f : r;  // isnan, written so the loop stays branch-free
  r = r < lo ? lo : r;
  return r > hi ? hi : r;
}

inline int32_t cell_bound(float x, int32_t n) {
  // torch: ceil(x).clamp(-1, n + 1).long().clamp(0, n), NaN -> 0. Clamping x to [-1, n] first gives
  // the same result for every x (ceil is monotone and maps -1 and n to themselves; NaN fails the
  // first test and becomes -1), keeps the conversion in range, and needs no library ceil.
  x = x > -1.0f ? x : -1.0f;
  x = x < (float)n ? x : (float)n;
  const float t = (float)(int32_t)x;  // truncation toward zero, exact for |x| < 2**31
  const int32_t c = (int32_t)t + (int32_t)(t < x);
  return c < 0 ? 0 : c;
}

inline float ceil_scalar(float x) {
  // Exact ceil for every float (|x| >= 2**23, inf and NaN are already integral and returned as is).
  if (!(std::fabs(x) < 8388608.0f)) return x;
  const float t = (float)(int32_t)x;
  return t < x ? t + 1.0f : t;
}

struct Frame {
  float r[12];  // world-to-camera rows x, y, z
  float fx, cx, fy, cy, x_lo, x_hi, y_lo, y_hi;
};

// One block's projection (pass 1), structure of arrays.
struct Lanes {
  alignas(64) float u[kLanes], v[kLanes], z[kLanes], zc[kLanes], a[kLanes], b[kLanes], c[kLanes], d[kLanes], lim0[kLanes],
      lim1[kLanes];
  alignas(64) int32_t j0[kLanes], j1[kLanes], i0[kLanes], i1[kLanes], ok[kLanes];
  // the ungrown patch's box (as the grown one with grow = 0): a cell outside it is grown-only
  alignas(64) int32_t e_j0[kLanes], e_j1[kLanes], e_i0[kLanes], e_i1[kLanes];
};

template <bool PATCH>
void project(const Frame& f, const float* P, const float* A, const float* BIAS, int64_t n, int32_t h, int32_t w,
             float m, float lim, float grow, Lanes& L) {
  const float* r = f.r;
  const float fx = f.fx, cx = f.cx, fy = f.fy, cy = f.cy;
  const float x_lo = f.x_lo, x_hi = f.x_hi, y_lo = f.y_lo, y_hi = f.y_hi;
  const float r_point = nan_to_num_clamp(0.5f, 0.5f, m);
  // Deinterleave the block first: with (x, y, z) and the six axis values as separate arrays the
  // compute loop below is plain unit-stride, which the vectoriser takes.
  alignas(64) float SX[kLanes], SY[kLanes], SZ[kLanes], SA[6][kLanes], SB[kLanes];
  for (int64_t k = 0; k < n; ++k) { SX[k] = P[3 * k]; SY[k] = P[3 * k + 1]; SZ[k] = P[3 * k + 2]; }
  for (int64_t k = 0; k < n; ++k) SB[k] = BIAS ? BIAS[k] : 1.0f;
  if (PATCH)
    for (int64_t k = 0; k < n; ++k)
      for (int q = 0; q < 6; ++q) SA[q][k] = A[6 * k + q];
#pragma GCC ivdep
  for (int64_t k = 0; k < n; ++k) {
    const float X = SX[k], Y = SY[k], Z = SZ[k];
    const float xc = r[0] * X + r[1] * Y + r[2] * Z + r[3];
    const float yc = r[4] * X + r[5] * Y + r[6] * Z + r[7];
    const float z = r[8] * X + r[9] * Y + r[10] * Z + r[11];
    const int32_t in = (z > 0) & (xc > x_lo * z) & (xc < x_hi * z) & (yc > y_lo * z) & (yc < y_hi * z);
    const float xn = xc / z, yn = yc / z;
    const float u = xn * fx + cx, v = yn * fy + cy;
    float ru = r_point, rv = r_point;
    if (PATCH) {
      const float a6[6] = {SA[0][k], SA[1][k], SA[2][k], SA[3][k], SA[4][k], SA[5][k]};
      const float c0x = r[0] * a6[0] + r[1] * a6[1] + r[2] * a6[2];
      const float c0y = r[4] * a6[0] + r[5] * a6[1] + r[6] * a6[2];
      const float c0z = r[8] * a6[0] + r[9] * a6[1] + r[10] * a6[2];
      const float c1x = r[0] * a6[3] + r[1] * a6[4] + r[2] * a6[5];
      const float c1y = r[4] * a6[3] + r[5] * a6[4] + r[6] * a6[5];
      const float c1z = r[8] * a6[3] + r[9] * a6[4] + r[10] * a6[5];
      const float a = fx * (c0x - xn * c0z) / z, c = fy * (c0y - yn * c0z) / z;
      const float b = fx * (c1x - xn * c1z) / z, d = fy * (c1y - yn * c1z) / z;
      L.a[k] = a; L.b[k] = b; L.c[k] = c; L.d[k] = d;
      // footprint grown by `grow` target cells: the box by grow, each half-axis's limit by grow
      // over that axis's length in cells (0 for a zero axis)
      const float eu = nan_to_num_clamp(std::fabs(a) + std::fabs(b), 0.5f, m);
      const float ev = nan_to_num_clamp(std::fabs(c) + std::fabs(d), 0.5f, m);
      L.e_j0[k] = cell_bound(u - eu - 0.5f, w);
      L.e_j1[k] = cell_bound(u + eu - 0.5f, w);
      L.e_i0[k] = cell_bound(v - ev - 0.5f, h);
      L.e_i1[k] = cell_bound(v + ev - 0.5f, h);
      ru = nan_to_num_clamp(std::fabs(a) + std::fabs(b) + grow, 0.5f, m);
      rv = nan_to_num_clamp(std::fabs(c) + std::fabs(d) + grow, 0.5f, m);
      const float len0 = std::sqrt(a * a + c * c), len1 = std::sqrt(b * b + d * d);
      L.lim0[k] = lim + (len0 > 0 ? grow / len0 : 0.0f);
      L.lim1[k] = lim + (len1 > 0 ? grow / len1 : 0.0f);
    }
    L.u[k] = u; L.v[k] = v; L.z[k] = z; L.zc[k] = z * SB[k]; L.ok[k] = in;
    L.j0[k] = cell_bound(u - ru - 0.5f, w);
    L.j1[k] = cell_bound(u + ru - 0.5f, w);
    L.i0[k] = cell_bound(v - rv - 0.5f, h);
    L.i1[k] = cell_bound(v + rv - 0.5f, h);
  }
}

inline void put(u128* best, int64_t cell, u128 val) {
  // branch-free: which of two stacked points is nearer is data, not a predictable branch
  const u128 b = best[cell];
  best[cell] = val < b ? val : b;
}

template <bool PATCH>
void rasterise(const Lanes& L, const int64_t* KEY, int64_t n, int64_t own0, int32_t w, float lim, u128* best) {
  // A cell only the grown footprint reaches (not the patch itself) gets the top bit: it loses to every
  // point whose own patch covers the cell, and among grown-only candidates the nearest wins.
  const u128 grown_bit = (u128)1 << 127;
  for (int64_t k = 0; k < n; ++k) {
    if (!L.ok[k]) continue;
    const int32_t jc0 = L.j0[k], jc1 = L.j1[k], ic0 = L.i0[k], ic1 = L.i1[k];
    const int32_t si = ic1 - ic0, sj = jc1 - jc0;
    const int32_t span = std::min(si, sj) > 0 ? std::max(si, sj) : 0;
    if (span == 0 || span > 65) continue;  // the torch path's span groups end at 65
    int32_t zb;
    std::memcpy(&zb, &L.zc[k], 4);  // the z-buffer compares the biased depth
    const uint64_t val = ((uint64_t)(uint32_t)zb << 32) | (uint64_t)(KEY[k] & 0x7FFFFFFF);
    const u128 key = ((u128)val << 64) | (u128)(uint64_t)(own0 + k);
    if (span == 1) { put(best, (int64_t)ic0 * w + jc0, key); continue; }
    float ia = 0, ib = 0, ic = 0, id = 0;
    int64_t hi_ = 0, hj_ = 0;
    const float u = L.u[k], v = L.v[k];
    if (PATCH) {
      const float a = L.a[k], b = L.b[k], c = L.c[k], d = L.d[k];
      const float det = a * d - b * c;
      if (std::fabs(det) > 1e-12f) {
        const float inv = (1.0f / det) * 1.0f;
        ia = d * inv; ib = -b * inv; ic = -c * inv; id = a * inv;
      } else {
        ia = ib = ic = id = 1e12f;
      }
      hi_ = (int64_t)ceil_scalar(v - 1.0f);
      hj_ = (int64_t)ceil_scalar(u - 1.0f);
    }
    for (int32_t ci = ic0; ci < ic1; ++ci) {
      for (int32_t cj = jc0; cj < jc1; ++cj) {
        if (PATCH) {
          const float dx = ((float)cj + 0.5f) - u, dy = ((float)ci + 0.5f) - v;
          const float al = ia * dx + ib * dy, be = ic * dx + id * dy;
          const bool home = (ci == hi_ && cj == hj_);
          if (!((std::fabs(al) <= L.lim0[k] && std::fabs(be) <= L.lim1[k]) || home)) continue;
          const bool exact = home || (std::fabs(al) <= lim && std::fabs(be) <= lim && ci >= L.e_i0[k] &&
                                      ci < L.e_i1[k] && cj >= L.e_j0[k] && cj < L.e_j1[k]);
          put(best, (int64_t)ci * w + cj, exact ? key : (key | grown_bit));
          continue;
        }
        put(best, (int64_t)ci * w + cj, key);
      }
    }
  }
}

template <bool PATCH>
void splat_frames(const float* P, const float* A, const int64_t* KEY, const float* BIAS, const std::vector<Frame>& frames,
                  const int64_t* BL, const int64_t* BS, int64_t N, int64_t block, int32_t h, int32_t w, float m,
                  int64_t owner_offset, float lim, float grow, int64_t* IDX, float* DEP) {
  const int64_t T = (int64_t)frames.size(), hw = (int64_t)h * w;
  const u128 empty = ~(u128)0;
  at::parallel_for(0, T, 1, [&](int64_t t_begin, int64_t t_end) {
    std::vector<u128> best(hw);
    std::unique_ptr<Lanes> lanes(new Lanes);
    for (int64_t t = t_begin; t < t_end; ++t) {
      std::fill(best.begin(), best.end(), empty);
      for (int64_t q = BS[t]; q < BS[t + 1]; ++q) {
        const int64_t p0 = BL[q] * block, p_end = std::min(N, p0 + block);
        for (int64_t s = p0; s < p_end; s += kLanes) {
          const int64_t n = std::min<int64_t>(kLanes, p_end - s);
          project<PATCH>(frames[t], P + 3 * s, PATCH ? A + 6 * s : nullptr, BIAS ? BIAS + s : nullptr, n, h, w, m, lim,
                         grow, *lanes);
          rasterise<PATCH>(*lanes, KEY + s, n, s + owner_offset, w, lim, best.data());
        }
      }
      int64_t* idx = IDX + t * hw;
      float* dep = DEP + t * hw;
      for (int64_t k = 0; k < hw; ++k) {
        if (best[k] == empty) continue;
        idx[k] = (int64_t)(uint64_t)best[k];
        const int32_t zb = (int32_t)((uint32_t)((uint64_t)(best[k] >> 64) >> 32) & 0x7FFFFFFFu);  // without the grown bit
        std::memcpy(dep + k, &zb, 4);
        if (BIAS) dep[k] = dep[k] / BIAS[idx[k] - owner_offset];  // the winner's own depth back
      }
    }
  });
}

}  // namespace

std::vector<torch::Tensor> splat_patches_cpu(torch::Tensor points, torch::Tensor axes, torch::Tensor key,
                                             torch::Tensor w2c, torch::Tensor K, torch::Tensor bounds,
                                             torch::Tensor blocks, torch::Tensor block_start, int64_t block,
                                             int64_t h, int64_t w, double max_radius, int64_t owner_offset,
                                             bool patch, double margin, double grow_cells, torch::Tensor bias) {
  // blocks: the visible blocks of every frame, concatenated (frame t's are
  // blocks[block_start[t] : block_start[t + 1]]); block b holds the points [b * block, (b + 1) * block).
  // The cull is conservative (it only skips points the per-point test drops), so it changes no bit;
  // the order of the points does not matter to the z-buffer either.
  const int64_t N = points.size(0), T = w2c.size(0);
  auto index = torch::full({T, h, w}, -1, torch::kInt64);
  auto depth = torch::zeros({T, h, w}, torch::kFloat32);
  const float* R = w2c.data_ptr<float>();
  const float* KK = K.data_ptr<float>();
  const float* B = bounds.data_ptr<float>();
  std::vector<Frame> frames(T);
  for (int64_t t = 0; t < T; ++t) {
    Frame& f = frames[t];
    for (int i = 0; i < 12; ++i) f.r[i] = R[16 * t + i];
    f.fx = KK[9 * t + 0]; f.cx = KK[9 * t + 2]; f.fy = KK[9 * t + 4]; f.cy = KK[9 * t + 5];
    f.x_lo = B[4 * t]; f.x_hi = B[4 * t + 1]; f.y_lo = B[4 * t + 2]; f.y_hi = B[4 * t + 3];
  }
  const float* P = points.data_ptr<float>();
  const int64_t* KEY = key.data_ptr<int64_t>();
  const int64_t* BL = blocks.data_ptr<int64_t>();
  const int64_t* BS = block_start.data_ptr<int64_t>();
  const float m = (float)max_radius, lim = (float)(1.0 + margin), grow = (float)grow_cells;
  const float* BIAS = bias.numel() ? bias.data_ptr<float>() : nullptr;  // (N,) depth factor of the z-buffer test
  if (patch)
    splat_frames<true>(P, axes.data_ptr<float>(), KEY, BIAS, frames, BL, BS, N, block, (int32_t)h, (int32_t)w, m,
                       owner_offset, lim, grow, index.data_ptr<int64_t>(), depth.data_ptr<float>());
  else
    splat_frames<false>(P, nullptr, KEY, BIAS, frames, BL, BS, N, block, (int32_t)h, (int32_t)w, m, owner_offset, lim,
                        grow, index.data_ptr<int64_t>(), depth.data_ptr<float>());
  return {index, depth};
}

// ---------------------------------------------------------------------------------- reduce_depth
// Compiled twin of mirage_cli.memory.lifting.reduce_depth (factor > 1): the same rule and the same
// fp32 operations in the same order, cell by cell in one pass over the pixels.

namespace {

float pairwise_sum(float* x, int64_t n) {
  // entries 2i and 2i + 1 added, an odd last entry carried to the end of the next level (in place)
  while (n > 1) {
    const int64_t m = n / 2;
    for (int64_t i = 0; i < m; ++i) x[i] = x[2 * i] + x[2 * i + 1];
    if (n % 2) { x[m] = x[n - 1]; n = m + 1; } else { n = m; }
  }
  return x[0];
}

}  // namespace

torch::Tensor reduce_depth_cpu(torch::Tensor depth, int64_t factor, double edge_tol) {
  // depth: (B, h * factor, w * factor) float32, contiguous -> (B, h, w) float32
  const int64_t B = depth.size(0), H = depth.size(1), W = depth.size(2), f = factor;
  const int64_t h = H / f, w = W / f, n = f * f;
  auto out = torch::empty({B, h, w}, torch::kFloat32);
  const float* D = depth.data_ptr<float>();
  float* O = out.data_ptr<float>();
  const float tol = (float)(1.0 + edge_tol), inf = std::numeric_limits<float>::infinity();
  at::parallel_for(0, B * h, 1, [&](int64_t r_begin, int64_t r_end) {
    // per pixel column of a row of cells: 1 / d of every pixel row, then their pairwise sums, the
    // smallest and largest value and whether a NaN is there (plain loops over W: vectorised)
    std::vector<float> recip(f * W), lo(W), hi(W), v(n), col(f), terms(n);
    std::vector<int32_t> nan(W);
    for (int64_t r = r_begin; r < r_end; ++r) {  // one row of cells: frame r / h, cell row r % h
      const float* rows = D + (r / h) * H * W + (r % h) * f * W;
      for (int64_t x = 0; x < W; ++x) { lo[x] = inf; hi[x] = -inf; nan[x] = 0; }
      for (int64_t a = 0; a < f; ++a) {
        const float* p = rows + a * W;
        float* q = recip.data() + a * W;
        for (int64_t x = 0; x < W; ++x) {
          const float d = p[x];
          q[x] = 1.0f / d;
          nan[x] |= d != d;
          lo[x] = d < lo[x] ? d : lo[x];
          hi[x] = d > hi[x] ? d : hi[x];
        }
      }
      // pairwise down the pixel rows, level by level (the same order as pairwise_sum per column)
      for (int64_t m = f; m > 1;) {
        const int64_t half = m / 2;
        for (int64_t i = 0; i < half; ++i) {
          float* dst = recip.data() + i * W;
          const float* s0 = recip.data() + 2 * i * W;
          const float* s1 = s0 + W;
          for (int64_t x = 0; x < W; ++x) dst[x] = s0[x] + s1[x];
        }
        if (m % 2) {
          std::copy(recip.data() + (m - 1) * W, recip.data() + m * W, recip.data() + half * W);
          m = half + 1;
        } else {
          m = half;
        }
      }
      const float* colsum = recip.data();  // row 0: each pixel column's sum of 1 / d
      for (int64_t j = 0; j < w; ++j) {
        float cl = inf, ch = -inf;
        bool cn = false;
        for (int64_t c = 0; c < f; ++c) {
          const int64_t x = j * f + c;
          cl = lo[x] < cl ? lo[x] : cl;
          ch = hi[x] > ch ? hi[x] : ch;
          cn |= nan[x] != 0;
        }
        float cnt, inv;
        if (!cn && cl > 0 && std::isfinite(ch) && ch <= cl * tol) {
          // smooth: every pixel; the column sums above, then pairwise across the columns
          for (int64_t c = 0; c < f; ++c) col[c] = colsum[j * f + c];
          inv = pairwise_sum(col.data(), f);
          cnt = (float)n;
        } else {
          // hard: sorted, the nearest value and the following ones up to the first jump
          for (int64_t a = 0; a < f; ++a)
            for (int64_t c = 0; c < f; ++c) {
              const float d = rows[a * W + j * f + c];
              v[a * f + c] = d > 0 ? d : inf;  // NaN, <= 0, -inf -> +inf (sorted last, excluded)
            }
          std::sort(v.begin(), v.end());
          bool ok = true;
          int64_t count = 0;
          for (int64_t k = 0; k < n; ++k) {
            if (k > 0 && v[k] > v[k - 1] * tol) ok = false;
            const bool incl = ok && std::isfinite(v[k]);
            terms[k] = incl ? 1.0f / v[k] : 0.0f;
            count += incl;
          }
          inv = pairwise_sum(terms.data(), n);
          cnt = (float)count;
        }
        const float safe = inv < 1e-30f ? 1e-30f : inv;  // torch clamp(min=1e-30); NaN stays NaN
        O[r * w + j] = cnt > 0 ? cnt / safe : 0.0f;
      }
    }
  });
  return out;
}

// ---------------------------------------------------------------------------------- lift_patches
// Compiled twin of mirage_cli.memory.splat.lift_patches_frames: the same float64 operations in the
// same order per cell (depth slopes from the neighbours, the cell-centre ray, the patch half-axes,
// rotated to the world), then rounded to float32 as torch's .to(float32) does.

namespace {

inline double slope(double prev, double here, double next, bool ok_prev, bool ok_here, bool ok_next, bool has_prev,
                    bool has_next, double ratio) {
  // splat.depth_slopes' `along` at one cell: one-sided differences to both neighbours; their mean
  // when they agree in sign within `ratio`, else the smaller; one side only when the other is
  // missing; 0 when both are
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double fwd = (has_next && ok_next && ok_here) ? next - here : nan;
  const double bwd = (has_prev && ok_here && ok_prev) ? here - prev : nan;
  const double af = std::fabs(fwd), ab = std::fabs(bwd);
  const double mx = (af != af || ab != ab) ? nan : (af > ab ? af : ab);  // torch.maximum / minimum: NaN wins
  const double mn = (af != af || ab != ab) ? nan : (af < ab ? af : ab);
  const bool agree = (fwd * bwd > 0) && (mx <= ratio * mn);
  const double small = af <= ab ? fwd : bwd;
  double g = agree ? 0.5 * (fwd + bwd) : small;
  g = (fwd != fwd) ? bwd : ((bwd != bwd) ? fwd : g);
  return g != g ? 0.0 : g;  // nan_to_num(0); the differences are finite, so no inf here
}

}  // namespace

std::vector<torch::Tensor> lift_patches_cpu(torch::Tensor depth, torch::Tensor K, torch::Tensor c2w,
                                            torch::Tensor cells, double max_stretch) {
  // depth (T, h, w) float64, K (T, 3, 3) float64, c2w (T, 4, 4) float64, cells (T, h, w) bool, all
  // contiguous. Returns world (M, 3), footprint (M,), axes (M, 2, 3) float32 and tt, ii, jj (M,) int64.
  const int64_t T = depth.size(0), h = depth.size(1), w = depth.size(2), hw = h * w;
  const double* D = depth.data_ptr<double>();
  const double* KK = K.data_ptr<double>();
  const double* C = c2w.data_ptr<double>();
  const bool* S = cells.data_ptr<bool>();
  int64_t M = 0;
  for (int64_t k = 0; k < T * hw; ++k) M += S[k];
  auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  auto world = torch::empty({M, 3}, f32), foot = torch::empty({M}, f32), axes = torch::empty({M, 2, 3}, f32);
  auto tt = torch::empty({M}, i64), ii = torch::empty({M}, i64), jj = torch::empty({M}, i64);
  float* W = world.data_ptr<float>();
  float* F = foot.data_ptr<float>();
  float* A = axes.data_ptr<float>();
  int64_t *TT = tt.data_ptr<int64_t>(), *II = ii.data_ptr<int64_t>(), *JJ = jj.data_ptr<int64_t>();
  const double ratio = 3.0, stretch = max_stretch;
  int64_t m = 0;
  for (int64_t t = 0; t < T; ++t) {
    const double* d = D + t * hw;
    const double* k3 = KK + 9 * t;
    const double* R = C + 16 * t;
    const double fx = k3[0], fy = k3[4], cx = k3[2], cy = k3[5];
    for (int64_t i = 0; i < h; ++i) {
      for (int64_t j = 0; j < w; ++j) {
        if (!S[t * hw + i * w + j]) continue;
        auto at = [&](int64_t a, int64_t b) { return d[a * w + b]; };
        const double z = at(i, j);
        const bool ok = z > 0;
        double gu = slope(j > 0 ? at(i, j - 1) : 0.0, z, j + 1 < w ? at(i, j + 1) : 0.0, j > 0 && at(i, j - 1) > 0, ok,
                          j + 1 < w && at(i, j + 1) > 0, j > 0, j + 1 < w, ratio);
        double gv = slope(i > 0 ? at(i - 1, j) : 0.0, z, i + 1 < h ? at(i + 1, j) : 0.0, i > 0 && at(i - 1, j) > 0, ok,
                          i + 1 < h && at(i + 1, j) > 0, i > 0, i + 1 < h, ratio);
        const double xn = (((double)j + 0.5) - cx) / fx;
        const double yn = (((double)i + 0.5) - cy) / fy;
        const double footprint = z / fx;
        const double lim = stretch * footprint;
        gu = gu < lim ? gu : lim;  // torch.minimum then torch.maximum (no NaN here)
        gu = gu > -lim ? gu : -lim;
        gv = gv < lim ? gv : lim;
        gv = gv > -lim ? gv : -lim;
        const double cam[3] = {xn * z, yn * z, z};
        const double du[3] = {(gu * xn + z / fx) * 0.5, (gu * yn) * 0.5, gu * 0.5};
        const double dv[3] = {(gv * xn) * 0.5, (gv * yn + z / fy) * 0.5, gv * 0.5};
        for (int r = 0; r < 3; ++r) {
          const double* row = R + 4 * r;
          W[3 * m + r] = (float)(row[0] * cam[0] + row[1] * cam[1] + row[2] * cam[2] + row[3]);
          A[6 * m + r] = (float)((row[0] * du[0] + row[1] * du[1] + row[2] * du[2]) / footprint);
          A[6 * m + 3 + r] = (float)((row[0] * dv[0] + row[1] * dv[1] + row[2] * dv[2]) / footprint);
        }
        F[m] = (float)footprint;
        TT[m] = t; II[m] = i; JJ[m] = j;
        ++m;
      }
    }
  }
  return {world, foot, axes, tt, ii, jj};
}

// ---------------------------------------------------------------------------------- hash_rows
// Compiled twin of mirage_cli.memory.splat.hash_rows (the same integer arithmetic).

namespace {
inline uint64_t mix32(uint64_t x) {
  const uint64_t mask = 0xFFFFFFFFull;
  x &= mask;
  x = (((x >> 16) ^ x) * 0x45D9F3Bull) & mask;
  x = (((x >> 16) ^ x) * 0x45D9F3Bull) & mask;
  return (x >> 16) ^ x;
}
}  // namespace

torch::Tensor hash_rows_cpu(torch::Tensor bits) {
  // bits (N, D) int64 in [0, 2**32), contiguous -> (N,) int64 in [0, 2**31)
  const int64_t N = bits.size(0), Dn = bits.size(1);
  const int64_t* B = bits.data_ptr<int64_t>();
  std::vector<uint64_t> salt(Dn), weight(Dn);
  for (int64_t c = 0; c < Dn; ++c) {
    salt[c] = (uint64_t)c * 0x9E3779B9ull;
    weight[c] = (mix32((uint64_t)c + 0x1234567ull) & 0xFFFFFull) | 1ull;
  }
  auto out = torch::empty({N}, torch::TensorOptions().dtype(torch::kInt64));
  int64_t* O = out.data_ptr<int64_t>();
  at::parallel_for(0, N, 4096, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      uint64_t s = 0;
      for (int64_t c = 0; c < Dn; ++c) s += mix32((uint64_t)B[r * Dn + c] + salt[c]) * weight[c];
      O[r] = (int64_t)(mix32((s & 0xFFFFFFFFull) + (uint64_t)Dn) & 0x7FFFFFFFull);
    }
  });
  return out;
}
