// libtorch's (PyTorch's C++ API) side of bench-compare: a server timing
// eager overhead, MLP training steps and the vectorized Rosenbrock
// function's gradient and HVP for driver.py, in libad_peer.c's protocol.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <vector>

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

static const auto F64 = torch::TensorOptions().dtype(torch::kFloat64);

// eager: y = y*a + b on 1-element tensors, without grad, recorded (a and b
// require grad), and the backward pass (torch::autograd::grad, graph
// freed with y).
static void case_eager(long long nops, double minsec) {
  std::vector<double> t0s, t1s, t2s;
  double chk = 0;
  double start = now();
  for (int r = -1; t0s.size() < 3 || now() - start < minsec; r++) {
    auto a = torch::full({1}, 0.5, F64), b = torch::full({1}, 1.0, F64);
    auto y = torch::zeros({1}, F64);
    double t0 = now();
    {
      torch::NoGradGuard ng;
      for (long long i = 0; i < nops / 2; i++) y = y * a + b;
    }
    double t1 = now();
    a.requires_grad_(true);
    b.requires_grad_(true);
    auto z = torch::zeros({1}, F64);
    double t2 = now();
    for (long long i = 0; i < nops / 2; i++) z = z * a + b;
    double t3 = now();
    auto g = torch::autograd::grad({z}, {a, b});
    double val = z.item<double>();
    z = torch::Tensor();  // frees the graph
    double t4 = now();
    if (r < 0) {
      chk = val + g[0].item<double>() + g[1].item<double>();
      start = now();
      continue;
    }
    t0s.push_back((t1 - t0) / nops * 1e9);
    t1s.push_back((t3 - t2) / nops * 1e9);
    t2s.push_back((t4 - t3) / nops * 1e9);
  }
  std::printf("ok noad_ns=%.6g tape_ns=%.6g bwd_ns=%.6g reps=%zu chk=%.17g\n",
              median(t0s), median(t1s), median(t2s), t0s.size(), chk);
}

// mlp64 / mlp32: 784-256-256-10 tanh, cross-entropy, batch 128: forward,
// backward, SGD update.
struct Mlp {
  std::vector<torch::Tensor> W, b;
  torch::Tensor X, Y;
  explicit Mlp(torch::Dtype dt) {
    torch::manual_seed(1234);
    const int dims[4] = {784, 256, 256, 10};
    auto o = torch::TensorOptions().dtype(dt);
    for (int l = 0; l < 3; l++) {
      double bound = 1.0 / std::sqrt((double)dims[l]);
      W.push_back(torch::empty({dims[l + 1], dims[l]}, o)
                      .uniform_(-bound, bound)
                      .requires_grad_());
      b.push_back(
          torch::empty({dims[l + 1]}, o).uniform_(-bound, bound).requires_grad_());
    }
    X = torch::randn({128, 784}, o);
    Y = (torch::arange(128) * 7) % 10;
  }
  double step(double lr) {
    double t0 = now();
    auto h = X;
    for (int l = 0; l < 3; l++) {
      h = torch::nn::functional::linear(h, W[l], b[l]);
      if (l < 2) h = torch::tanh(h);
    }
    auto loss = torch::nn::functional::cross_entropy(h, Y);
    std::vector<torch::Tensor> ps;
    for (int l = 0; l < 3; l++) {
      ps.push_back(W[l]);
      ps.push_back(b[l]);
    }
    auto g = torch::autograd::grad({loss}, ps);
    {
      torch::NoGradGuard ng;
      for (size_t i = 0; i < ps.size(); i++) ps[i].sub_(g[i] * lr);
    }
    return now() - t0;
  }
};

static void case_mlp(torch::Dtype dt, double minsec) {
  static std::unique_ptr<Mlp> m64, m32;
  auto &m = dt == torch::kFloat64 ? m64 : m32;
  if (!m) m.reset(new Mlp(dt));
  for (int i = 0; i < 2; i++) m->step(1e-3);
  std::vector<double> t;
  double start = now();
  while (t.size() < 3 || now() - start < minsec) t.push_back(m->step(1e-3) * 1e3);
  std::printf("ok step_ms=%.6g reps=%zu\n", median(t), t.size());
}

// rosen: the vectorized Rosenbrock function at x_i = -1.2 + 2.2 i/(n-1);
// gradient (autograd::grad) and HVP (double backward) along
// v_i = ((i mod 7) - 3) / 4.
static torch::Tensor rosen(const torch::Tensor &x) {
  auto n = x.size(0);
  auto a = x.slice(0, 0, n - 1), b = x.slice(0, 1, n);
  auto t = b - a * a, u = 1.0 - a;
  return (100.0 * t * t + u * u).sum();
}

static void case_rosen(long long n, double minsec) {
  auto x = torch::linspace(-1.2, 1.0, (int64_t)n, F64);
  auto v = ((torch::arange((int64_t)n, torch::TensorOptions().dtype(torch::kInt64)) % 7) - 3)
               .to(torch::kFloat64) *
           0.25;
  std::vector<double> tf, tg, th;
  double cf = 0, cg = 0, ch = 0;
  double start = now();
  for (int r = -1; tf.size() < 3 || now() - start < minsec; r++) {
    double t0 = now();
    double fv;
    {
      torch::NoGradGuard ng;
      fv = rosen(x).item<double>();
    }
    double t1 = now();
    auto xg = x.detach().requires_grad_();
    auto g = torch::autograd::grad({rosen(xg)}, {xg})[0];
    double t2 = now();
    auto xh = x.detach().requires_grad_();
    auto gh = torch::autograd::grad({rosen(xh)}, {xh}, {}, true, true)[0];
    auto hv = torch::autograd::grad({gh}, {xh}, torch::autograd::variable_list{v})[0];
    double t3 = now();
    if (r < 0) {
      cf = fv;
      cg = (g * g).sum().item<double>();
      ch = (hv * hv).sum().item<double>();
      start = now();
      continue;
    }
    tf.push_back((t1 - t0) * 1e3);
    tg.push_back((t2 - t1) * 1e3);
    th.push_back((t3 - t2) * 1e3);
  }
  std::printf("ok f_ms=%.6g grad_ms=%.6g hvp_ms=%.6g reps=%zu chk_f=%.17g "
              "chk_g=%.17g chk_hv=%.17g\n",
              median(tf), median(tg), median(th), tf.size(), cf, cg, ch);
}

int main() {
  const char *th = std::getenv("OPENBLAS_NUM_THREADS");
  int threads = th ? std::atoi(th) : 1;
  torch::set_num_threads(threads > 0 ? threads : 1);
  std::printf("ready libtorch\n");
  std::fflush(stdout);
  char line[256];
  while (std::fgets(line, sizeof line, stdin)) {
    char cmd[16] = "", cs[32] = "";
    long long n = 0;
    double minsec = 0.1;
    int k = std::sscanf(line, "%15s %31s %lld %lf", cmd, cs, &n, &minsec);
    if (k < 1 || std::strcmp(cmd, "quit") == 0) break;
    try {
      if (std::strcmp(cmd, "run") != 0) std::printf("error bad request\n");
      else if (!std::strcmp(cs, "eager")) case_eager(n, minsec);
      else if (!std::strcmp(cs, "mlp64")) case_mlp(torch::kFloat64, minsec);
      else if (!std::strcmp(cs, "mlp32")) case_mlp(torch::kFloat32, minsec);
      else if (!std::strcmp(cs, "rosen")) case_rosen(n, minsec);
      else std::printf("skip libtorch has no case %s\n", cs);
    } catch (const std::exception &e) {
      std::string msg = e.what();
      std::replace(msg.begin(), msg.end(), '\n', ' ');
      std::printf("error %.200s\n", msg.c_str());
    }
    std::fflush(stdout);
  }
  return 0;
}
