"""PyTorch peer for the vectorized Rosenbrock benchmark (n = 10^6, float64):
gradient, JVP (torch.autograd.forward_ad) and double-backward HVP times over
the function's, alternated in one process, medians.

Usage: /usr/bin/python3 bench/torch_rosen.py
Exit status 2 (with a message) when torch cannot be imported.
"""
import os
import statistics
import sys
import time

CASE = "rosenbrock n=1e6 (vectorized)"
N, RUNS, WARM = 1_000_000, 41, 2


def line(figure, value, unit):
    a = abs(value)
    prec = 0 if a >= 1000 else 1 if a >= 100 else 2 if a >= 10 else 3
    print(f"{CASE} | pytorch | {figure} | {value:.{prec}f} | {unit}",
          flush=True)


def main():
    try:
        import torch
    except Exception as e:  # the peer is optional
        print(f"# pytorch peer skipped: cannot import torch ({e})", flush=True)
        return 2
    threads = int(os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(99)
    x = torch.empty(N, dtype=torch.float64).uniform_(-1.5, 1.5)
    v = torch.randn(N, dtype=torch.float64)

    def f(z):
        a, b = z[:-1], z[1:]
        return torch.sum(100.0 * (b - a * a) ** 2 + (1.0 - a) ** 2)

    def t_f():
        t0 = time.perf_counter()
        f(x).item()
        return time.perf_counter() - t0

    def t_grad():
        t0 = time.perf_counter()
        xg = x.detach().requires_grad_()
        (g,) = torch.autograd.grad(f(xg), xg)
        return time.perf_counter() - t0

    def t_hvp():
        t0 = time.perf_counter()
        xg = x.detach().requires_grad_()
        (g,) = torch.autograd.grad(f(xg), xg, create_graph=True)
        (hv,) = torch.autograd.grad(g, xg, grad_outputs=v)
        return time.perf_counter() - t0

    jvp_ok = True
    try:
        import torch.autograd.forward_ad as fwad

        def t_jvp():
            t0 = time.perf_counter()
            with fwad.dual_level():
                out = f(fwad.make_dual(x, v))
                fwad.unpack_dual(out).tangent.item()
            return time.perf_counter() - t0
        t_jvp()
    except Exception as e:
        jvp_ok = False
        print(f"# pytorch forward-mode JVP skipped: {e}", flush=True)

    tf, tg, tj, th = [], [], [], []
    for r in range(-WARM, RUNS):
        a, b = t_f(), t_grad()
        c = t_jvp() if jvp_ok else 0.0
        d = t_hvp()
        if r >= 0:
            tf.append(a)
            tg.append(b)
            tj.append(c)
            th.append(d)
    f_ms = statistics.median(tf) * 1e3
    line(f"function time (median of {RUNS}, {threads} thread"
         f"{'s' if threads > 1 else ''})", f_ms, "ms")
    line("gradient / function", statistics.median(tg) * 1e3 / f_ms, "x")
    if jvp_ok:
        line("JVP (forward_ad) / function",
             statistics.median(tj) * 1e3 / f_ms, "x")
    line("HVP (double backward) / function",
         statistics.median(th) * 1e3 / f_ms, "x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
