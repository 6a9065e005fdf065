"""PyTorch peer for the model-training benchmark: the digits CNN (batch 32,
8x8 images) and the 784-256-256-10 tanh MLP (batch 128), float64, each step
a forward pass, softmax cross-entropy, a backward pass and an Adam update.
Timed in blocks that alternate with libad's steps served by
`bench_nn --serve` (A B, then B A), medians of all steps.

Usage: /usr/bin/python3 bench/torch_nn.py BUILD/bench/bench_nn
Exit status 2 (with a message) when torch cannot be imported.
"""
import os
import statistics
import subprocess
import sys
import time

CASES = {
    "cnn": "train cnn digits 8x8 b32 f64 adam",
    "mlp": "train mlp 784-256-256-10 tanh b128 f64 adam",
}
ROUNDS, BLOCK, WARM = 20, 10, 5


def line(case, tool, figure, value, unit):
    a = abs(value)
    prec = 0 if a >= 1000 else 1 if a >= 100 else 2 if a >= 10 else 3
    print(f"{case} | {tool} | {figure} | {value:.{prec}f} | {unit}",
          flush=True)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 1
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except Exception as e:  # the peer is optional
        print(f"# pytorch peer skipped: cannot import torch ({e})", flush=True)
        return 2
    threads = int(os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(1234)

    # The same models as bench/bench_nn.c, in PyTorch's native layouts
    # (NCHW images).
    cnn = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.4),
        nn.Linear(128, 10)).double()
    mlp = nn.Sequential(
        nn.Linear(784, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(),
        nn.Linear(256, 10)).double()
    data = {
        "cnn": (cnn, torch.rand(32, 1, 8, 8, dtype=torch.float64),
                torch.randint(0, 10, (32,))),
        "mlp": (mlp, torch.randn(128, 784, dtype=torch.float64),
                torch.tensor([(i * 7) % 10 for i in range(128)])),
    }
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-3)
            for k, (m, _, _) in data.items()}

    def step(key):
        model, x, y = data[key]
        opt = opts[key]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return (time.perf_counter() - t0) * 1e3

    server = subprocess.Popen([sys.argv[1], "--serve"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, bufsize=1)

    def ask(key):
        server.stdin.write(f"{key} {BLOCK}\n")
        server.stdin.flush()
        return [float(v) for v in server.stdout.readline().split()]

    ready = server.stdout.readline()
    if not ready.startswith("ready"):
        print(f"# bench_nn server failed to start: {ready!r}",
              file=sys.stderr)
        return 1
    for key in CASES:
        for _ in range(WARM):
            step(key)
        ta, tt = [], []
        for r in range(ROUNDS):
            if r % 2 == 0:
                ta += ask(key)
                tt += [step(key) for _ in range(BLOCK)]
            else:
                tt += [step(key) for _ in range(BLOCK)]
                ta += ask(key)
        a, t = statistics.median(ta), statistics.median(tt)
        n = ROUNDS * BLOCK
        case = CASES[key]
        line(case, "libad",
             f"train step fwd+bwd+adam (median of {n}, alternating)", a, "ms")
        line(case, "pytorch",
             f"train step fwd+bwd+adam (median of {n}, alternating, "
             f"{threads} thread{'s' if threads > 1 else ''})", t, "ms")
        line(case, "libad", "libad time / pytorch time", a / t, "x")
    server.stdin.write("quit\n")
    server.stdin.close()
    server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
