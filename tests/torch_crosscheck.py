#!/usr/bin/python3
"""Numerical truth for libad: recompute the values, gradients and Hessians
that tests/test_torch_crosscheck.c computed with libad, with PyTorch in
float64, and compare.

Usage: torch_crosscheck.py FILE

FILE holds one expression per block of lines (written by the C test):

    expr <n> <tokens...>          postfix program over x (shape (n,))
    x <n values>
    const <name> <rows> <cols> <values...>   (zero or more)
    value <v>
    grad <n values>
    hess_fwd_rev <n*n values>     ad_hessian (forward over reverse)
    hess_rev_rev <n*n values>     ad_jacobian of ad_grad (reverse over reverse)
    end

Tokens: x, c:<number>, M:<name> (a constant matrix), unary ops (neg exp
log log1p expm1 sqrt square abs sin cos tan asin acos atan sinh cosh tanh
sigmoid softplus relu erf), binary ops (add sub mul div pow maximum
minimum atan2 matmul), reductions to a scalar (sum mean prod max min
logsumexp), vector ops (softmax log_softmax flip).

Prints one line per disagreement and a closing summary
"torch_crosscheck: N expressions, G gradients and H Hessians compared,
F failed"; exits 0 when nothing failed, 1 otherwise, 77 when torch is
missing (the C test then skips).
"""
import math
import sys

try:
    import torch
except Exception as e:  # pragma: no cover - depends on the system
    print("torch_crosscheck: PyTorch is not importable (%s)" % e)
    sys.exit(77)

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)

UNARY = {
    "neg": torch.neg, "exp": torch.exp, "log": torch.log,
    "log1p": torch.log1p, "expm1": torch.expm1, "sqrt": torch.sqrt,
    "square": torch.square, "abs": torch.abs, "sin": torch.sin,
    "cos": torch.cos, "tan": torch.tan, "asin": torch.asin,
    "acos": torch.acos, "atan": torch.atan, "sinh": torch.sinh,
    "cosh": torch.cosh, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
    "softplus": torch.nn.functional.softplus, "relu": torch.relu,
    "erf": torch.erf,
    "softmax": lambda t: torch.softmax(t, -1),
    "log_softmax": lambda t: torch.log_softmax(t, -1),
    "flip": lambda t: torch.flip(t, [-1]) if t.dim() > 0 else t,
    "sum": torch.sum, "mean": torch.mean, "prod": torch.prod,
    "max": torch.amax, "min": torch.amin,
    "logsumexp": lambda t: torch.logsumexp(t.reshape(-1), 0),
}
BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul,
    "div": torch.div, "pow": torch.pow, "maximum": torch.maximum,
    "minimum": torch.minimum, "atan2": torch.atan2,
    "matmul": torch.matmul,
}


def evaluate(tokens, x, consts):
    stack = []
    for tok in tokens:
        if tok == "x":
            stack.append(x)
        elif tok.startswith("c:"):
            stack.append(torch.tensor(float(tok[2:])))
        elif tok.startswith("M:"):
            stack.append(consts[tok[2:]])
        elif tok in UNARY:
            stack.append(UNARY[tok](stack.pop()))
        elif tok in BINARY:
            b = stack.pop()
            a = stack.pop()
            stack.append(BINARY[tok](a, b))
        else:
            raise ValueError("unknown token %r" % tok)
    assert len(stack) == 1, "the program leaves %d values" % len(stack)
    return stack[0].sum()


def tolerance(b, scale, rtol, floor=0.0):
    return rtol * (abs(b) + scale) + floor + 1e-300


def close(a, b, scale, rtol, floor=0.0):
    """a (libad) against b (torch): relative to |b| plus the scale of the
    quantity (the largest entry of the gradient or Hessian), so that
    entries that cancel to almost nothing are judged by their neighbours'
    size, plus an absolute floor for quantities that are rounding noise
    around an exact zero (the Hessian of logsumexp(log_softmax(x)) = 0)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= tolerance(b, scale, rtol, floor)


def main(path):
    blocks, cur = [], {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            key, rest = parts[0], parts[1:]
            if key == "expr":
                cur = {"n": int(rest[0]), "tokens": rest[1:], "consts": {}}
            elif key == "const":
                name, r, c = rest[0], int(rest[1]), int(rest[2])
                vals = [float(v) for v in rest[3:]]
                cur["consts"][name] = torch.tensor(vals).reshape(r, c)
            elif key == "end":
                blocks.append(cur)
            else:
                cur[key] = [float(v) for v in rest]
    failed = grads = hessians = 0
    worst = 0.0
    for i, b in enumerate(blocks):
        x0 = torch.tensor(b["x"])
        x = x0.clone().requires_grad_(True)
        try:
            y = evaluate(b["tokens"], x, b["consts"])
            (g,) = torch.autograd.grad(y, x, create_graph=True)
            H = torch.autograd.functional.hessian(
                lambda t: evaluate(b["tokens"], t, b["consts"]), x0)
        except Exception as e:
            print("expression %d (%s): torch failed: %s"
                  % (i, " ".join(b["tokens"]), e))
            failed += 1
            continue
        ok = True
        if not close(b["value"][0], y.item(), 0.0, 1e-12):
            print("expression %d: value %.17g, torch %.17g"
                  % (i, b["value"][0], y.item()))
            ok = False
        gl = g.detach().reshape(-1).tolist()
        gscale = max([abs(v) for v in gl] + [0.0])
        # A gradient that is exactly zero (of sum(softmax(x)) = 1) comes
        # out as rounding noise of the function's size.
        gfloor = 1e-14 * (1.0 + abs(y.item()))
        for k, (a, t) in enumerate(zip(b["grad"], gl)):
            if not close(a, t, gscale, 1e-10, gfloor):
                print("expression %d (%s): gradient[%d] %.17g, torch %.17g"
                      % (i, " ".join(b["tokens"]), k, a, t))
                ok = False
        grads += 1
        hl = H.reshape(-1).tolist()
        hscale = max([abs(v) for v in hl] + [0.0])
        # Rounding noise of the order of eps times the function's and
        # gradient's size.
        floor = 1e-13 * (1.0 + abs(y.item()) + gscale)
        for key in ("hess_fwd_rev", "hess_rev_rev"):
            for k, (a, t) in enumerate(zip(b[key], hl)):
                if math.isfinite(a) and math.isfinite(t):
                    worst = max(worst, abs(a - t) /
                                tolerance(t, hscale, 1e-9, floor))
                if not close(a, t, hscale, 1e-9, floor):
                    print("expression %d (%s): %s[%d] %.17g, torch %.17g"
                          % (i, " ".join(b["tokens"]), key, k, a, t))
                    ok = False
            hessians += 1
        failed += not ok
    print("torch_crosscheck: %d expressions, %d gradients and %d Hessians "
          "compared, %d failed (the largest Hessian difference is %.2g of "
          "its tolerance)"
          % (len(blocks), grads, hessians, failed, worst))
    return 0 if failed == 0 and blocks else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
