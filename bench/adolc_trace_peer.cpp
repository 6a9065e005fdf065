// ADOL-C peer for bench_trace: the scalar Rosenbrock function taped once per
// n, served over stdin/stdout so that bench_trace can alternate its rounds
// with libad's.  Each request line "N REPS" answers one line
// "GRAD_US HESSVEC_US": medians over REPS timed blocks of gradient() and
// hess_vec() on the tape (a block repeats the call until it lasts ~0.2 ms).
#include <adolc/adolc.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <vector>

static double now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t m = v.size();
  return m % 2 ? v[m / 2] : 0.5 * (v[m / 2 - 1] + v[m / 2]);
}

// The same point as bench_trace.c: linspace(-1.2, 1.0, n).
static std::vector<double> point(int n) {
  std::vector<double> x(n);
  for (int i = 0; i < n; i++) x[i] = -1.2 + 2.2 * i / (n - 1);
  return x;
}

// Tape f(x) = sum 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2 under tag.
static void tape(short tag, const std::vector<double> &x) {
  int n = (int)x.size();
  double fval;
  trace_on(tag);
  {
    std::vector<adouble> ax(n);
    for (int i = 0; i < n; i++) ax[i] <<= x[i];
    adouble f = 0;
    for (int i = 0; i < n - 1; i++) {
      adouble t = ax[i + 1] - ax[i] * ax[i];
      adouble u = 1 - ax[i];
      f += 100 * t * t + u * u;
    }
    f >>= fval;
  }
  trace_off();
}

// Median over reps blocks of the time of one call of fn, in us.
template <class F>
static double time_us(F fn, int reps) {
  int per = 1;
  for (;;) {  // calibrate the block to ~0.2 ms
    double t0 = now();
    for (int k = 0; k < per; k++) fn();
    if (now() - t0 > 2e-4 || per > 1 << 20) break;
    per *= 2;
  }
  std::vector<double> t;
  for (int r = 0; r < reps; r++) {
    double t0 = now();
    for (int k = 0; k < per; k++) fn();
    t.push_back((now() - t0) / per * 1e6);
  }
  return median(t);
}

int main() {
  std::map<int, short> tags;
  int n, reps;
  while (std::scanf("%d %d", &n, &reps) == 2) {
    if (n < 2 || reps < 1) return 1;
    std::vector<double> x = point(n), g(n), v(n, 1.0), hv(n);
    if (!tags.count(n)) {
      short tag = (short)(tags.size() + 1);
      tape(tag, x);
      tags[n] = tag;
    }
    short tag = tags[n];
    double tg = time_us([&] { gradient(tag, n, x.data(), g.data()); }, reps);
    double th = time_us(
        [&] { hess_vec(tag, n, x.data(), v.data(), hv.data()); }, reps);
    // Check both against the closed forms.
    double err = 0;
    for (int i = 0; i < n; i++) {
      double e = 0, h = 0;
      if (i < n - 1) {
        e += -400 * x[i] * (x[i + 1] - x[i] * x[i]) - 2 * (1 - x[i]);
        h += (1200 * x[i] * x[i] - 400 * x[i + 1] + 2) * v[i] -
             400 * x[i] * v[i + 1];
      }
      if (i > 0) {
        e += 200 * (x[i] - x[i - 1] * x[i - 1]);
        h += 200 * v[i] - 400 * x[i - 1] * v[i - 1];
      }
      err = std::max(err, std::fabs(g[i] - e) / (1 + std::fabs(e)));
      err = std::max(err, std::fabs(hv[i] - h) / (1 + std::fabs(h)));
    }
    if (err > 1e-9)
      std::fprintf(stderr, "adolc_trace_peer: results off by %g\n", err);
    std::printf("%.4f %.4f\n", tg, th);
    std::fflush(stdout);
  }
  return 0;
}
