// ADOL-C peer for the dense-Hessian benchmark: the 100-variable Rosenbrock
// function taped once, then hessian() timed; prints the median in us.
#include <adolc/adolc.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <vector>

static double now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  const int n = 100;
  const int runs = argc > 1 ? std::atoi(argv[1]) : 21;
  const short tag = 1;
  std::vector<double> x(n);
  // The same point as bench_forward.c: ad_linspace(-1.2, 1.0, n).
  for (int i = 0; i < n; i++) x[i] = -1.2 + 2.2 * i / (n - 1);

  // Tape f(x) = sum 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2 once.
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

  double **H = myalloc2(n, n);
  std::vector<double> times;
  for (int r = -2; r < runs; r++) {
    double t0 = now();
    hessian(tag, n, x.data(), H);
    double t1 = now();
    if (r >= 0) times.push_back((t1 - t0) * 1e6);
  }
  // hessian() fills the lower triangle; check it against the closed form.
  double err = 0;
  for (int i = 0; i < n; i++)
    for (int j = 0; j <= i; j++) {
      double e = 0;
      if (i == j) {
        if (i < n - 1) e += 1200 * x[i] * x[i] - 400 * x[i + 1] + 2;
        if (i > 0) e += 200;
      } else if (i == j + 1) {
        e = -400 * x[j];
      }
      err = std::max(err, std::fabs(H[i][j] - e));
    }
  if (err > 1e-9) std::fprintf(stderr, "adolc_peer: Hessian off by %g\n", err);
  myfree2(H);
  std::sort(times.begin(), times.end());
  size_t m = times.size();
  double med = m % 2 ? times[m / 2] : 0.5 * (times[m / 2 - 1] + times[m / 2]);
  std::printf("%.3f\n", med);
  return 0;
}
