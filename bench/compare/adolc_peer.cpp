// ADOL-C's side of bench-compare: a server timing the scalar Rosenbrock
// function's taped gradient(), hess_vec() and hessian() for driver.py.
#include <adolc/adolc.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

// Protocol: "run rscalar N MINSEC" -> "ok key=value ...", "quit".  Keys
// as libad_peer.c's rscalar (f_us is the taped function(), zero-order
// forward), plus grad_retape_us (trace_on ... trace_off and gradient()
// each call, what an eager tool does) and plain_us (the same loop on
// doubles, no AD).

static double now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  size_t m = v.size();
  return m % 2 ? v[m / 2] : 0.5 * (v[m / 2 - 1] + v[m / 2]);
}

template <class T> static T rosen(const T *x, int n) {
  T f = 0;
  for (int i = 0; i + 1 < n; i++) {
    T t = x[i + 1] - x[i] * x[i];
    T u = 1.0 - x[i];
    f += 100.0 * (t * t) + u * u;
  }
  return f;
}

static void tape(short tag, const double *x, int n) {
  trace_on(tag);
  std::vector<adouble> ax(n);
  for (int i = 0; i < n; i++) ax[i] <<= x[i];
  adouble f = rosen(ax.data(), n);
  double fv;
  f >>= fv;
  trace_off();
}

static void case_rscalar(int n, double minsec) {
  const short tag = 1, tag2 = 2;
  std::vector<double> x(n), v(n), g(n), hv(n);
  for (int i = 0; i < n; i++) {
    x[i] = -1.2 + 2.2 * i / (n - 1);
    v[i] = (i % 7 - 3) * 0.25;
  }
  bool dense = n <= 100;
  double **H = dense ? myalloc2(n, n) : nullptr;
  tape(tag, x.data(), n);
  std::vector<double> tf, tg, th, tH, tr, tp;
  double cf = 0, cg = 0, ch = 0, cH = 0;
  volatile double sink = 0;
  double start = now();
  for (int r = -1; tf.size() < 3 || now() - start < minsec; r++) {
    double y;
    double t0 = now();
    function(tag, 1, n, x.data(), &y);
    double t1 = now();
    gradient(tag, n, x.data(), g.data());
    double t2 = now();
    hess_vec(tag, n, x.data(), v.data(), hv.data());
    double t3 = now();
    if (dense) hessian(tag, n, x.data(), H);
    double t4 = now();
    tape(tag2, x.data(), n);
    gradient(tag2, n, x.data(), g.data());
    double t5 = now();
    sink = rosen(x.data(), n);
    double t6 = now();
    if (r < 0) {
      cf = y;
      for (int i = 0; i < n; i++) {
        cg += g[i] * g[i];
        ch += hv[i] * hv[i];
      }
      // hessian() fills the lower triangle: count the rest by symmetry.
      for (int i = 0; dense && i < n; i++)
        for (int j = 0; j <= i; j++) cH += (i == j ? 1 : 2) * H[i][j] * H[i][j];
      start = now();
      continue;
    }
    tf.push_back((t1 - t0) * 1e6);
    tg.push_back((t2 - t1) * 1e6);
    th.push_back((t3 - t2) * 1e6);
    tH.push_back((t4 - t3) * 1e6);
    tr.push_back((t5 - t4) * 1e6);
    tp.push_back((t6 - t5) * 1e6);
  }
  (void)sink;
  std::printf("ok f_us=%.6g grad_us=%.6g hvp_us=%.6g", median(tf), median(tg),
              median(th));
  if (dense) std::printf(" hess_us=%.6g", median(tH));
  std::printf(" grad_retape_us=%.6g plain_us=%.6g reps=%zu chk_f=%.17g "
              "chk_g=%.17g chk_hv=%.17g",
              median(tr), median(tp), tf.size(), cf, cg, ch);
  if (dense) std::printf(" chk_H=%.17g", cH);
  std::printf("\n");
  if (H) myfree2(H);
}

int main() {
  std::printf("ready adolc\n");
  std::fflush(stdout);
  char line[256];
  while (std::fgets(line, sizeof line, stdin)) {
    char cmd[16] = "", cs[32] = "";
    long long n = 0;
    double minsec = 0.1;
    int k = std::sscanf(line, "%15s %31s %lld %lf", cmd, cs, &n, &minsec);
    if (k < 1 || std::strcmp(cmd, "quit") == 0) break;
    if (std::strcmp(cmd, "run") == 0 && std::strcmp(cs, "rscalar") == 0 &&
        n >= 2)
      case_rscalar((int)n, minsec);
    else
      std::printf("skip adolc has no case %s\n", cs);
    std::fflush(stdout);
  }
  return 0;
}
