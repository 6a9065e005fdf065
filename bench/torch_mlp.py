"""PyTorch peer for the MLP benchmark: the same 784-256-256-10 tanh MLP with
softmax cross-entropy, batch 128, float64, timed in blocks that alternate
with libad's steps served by `bench_autodiff --mlp-serve` and with the raw
cblas_dgemm calls of the step (the dgemm-bound limit).

Usage: /usr/bin/python3 bench/torch_mlp.py BUILD/bench/bench_autodiff
Exit status 2 (with a message) when torch cannot be imported.
"""
import math
import os
import statistics
import subprocess
import sys
import time

CASE = "mlp 784-256-256-10 tanh b128 f64"
B, D, H1, H2, C = 128, 784, 256, 256, 10
ROUNDS, BLOCK, WARM = 30, 10, 5


def line(tool, figure, value, unit):
    a = abs(value)
    prec = 0 if a >= 1000 else 1 if a >= 100 else 2 if a >= 10 else 3
    print(f"{CASE} | {tool} | {figure} | {value:.{prec}f} | {unit}", flush=True)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 1
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # the peer is optional
        print(f"# pytorch peer skipped: cannot import torch ({e})", flush=True)
        return 2
    threads = int(os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)

    torch.manual_seed(1234)
    dims = [D, H1, H2, C]
    weights, biases = [], []
    for l in range(3):
        bound = 1.0 / math.sqrt(dims[l])
        w = torch.empty(dims[l + 1], dims[l], dtype=torch.float64)
        b = torch.empty(dims[l + 1], dtype=torch.float64)
        weights.append(w.uniform_(-bound, bound).requires_grad_())
        biases.append(b.uniform_(-bound, bound).requires_grad_())
    params = weights + biases
    x = torch.randn(B, D, dtype=torch.float64)
    y = torch.tensor([(i * 7) % C for i in range(B)])

    def step():
        t0 = time.perf_counter()
        for p in params:
            p.grad = None
        h = x
        for l in range(3):
            h = F.linear(h, weights[l], biases[l])
            if l < 2:
                h = torch.tanh(h)
        loss = F.cross_entropy(h, y)
        loss.backward()
        return (time.perf_counter() - t0) * 1e3

    server = subprocess.Popen([sys.argv[1], "--mlp-serve"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, bufsize=1)

    def ask(cmd):
        server.stdin.write(f"{cmd} {BLOCK}\n")
        server.stdin.flush()
        return [float(v) for v in server.stdout.readline().split()]

    ready = server.stdout.readline()
    if not ready.startswith("ready"):
        print(f"# mlp server failed to start: {ready!r}", file=sys.stderr)
        return 1
    for _ in range(WARM):
        step()
    ta, tt, tg = [], [], []
    for r in range(ROUNDS):
        # Alternate the order inside a round too: A B, then B A.
        if r % 2 == 0:
            ta += ask("mlp")
            tt += [step() for _ in range(BLOCK)]
        else:
            tt += [step() for _ in range(BLOCK)]
            ta += ask("mlp")
        tg += ask("gemm")
    server.stdin.write("quit\n")
    server.stdin.close()
    server.wait()

    a, t, g = (statistics.median(v) for v in (ta, tt, tg))
    flops = 2.0 * B * (2 * D * H1 + 3 * H1 * H2 + 3 * H2 * C)
    n = ROUNDS * BLOCK
    line("libad", f"fwd+bwd per step (median of {n}, alternating)", a, "ms")
    line("pytorch", f"fwd+bwd per step (median of {n}, alternating, "
         f"{threads} thread{'s' if threads > 1 else ''})", t, "ms")
    line("libad", "libad time / pytorch time", a / t, "x")
    line("libad", "matrix FLOPs per step (8 GEMMs)", flops * 1e-6, "MFLOP")
    line("cblas_dgemm", "step's 8 GEMMs alone (dgemm-bound limit)", g, "ms")
    line("cblas_dgemm", "raw dgemm rate on the step's GEMMs",
         flops / g * 1e-6, "GFLOP/s")
    line("libad", "fraction of dgemm-bound limit", g / a, "x")
    line("pytorch", "fraction of dgemm-bound limit", g / t, "x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
