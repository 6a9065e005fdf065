"""PyTorch's side of bench-compare: a server for bench/compare/driver.py that
times eager overhead, MLP training steps, the vectorized Rosenbrock function
and ADBench's GMM, LSTM and BA objectives (same formulations as libad's).

Run with an interpreter that imports torch (Debian: /usr/bin/python3).
Protocol, one line each way:
  run CASE N MINSEC       -> "ok key=value ..." | "skip REASON" | "error MSG"
  load NAME               -> "ok rho=R F=V" (ADBench: read, check J vs ref)
  batch NAME F|J REPS     -> "ok t=SECONDS_PER_CALL"
  unload NAME             -> "ok"
  quit
"""
import math
import os
import statistics
import sys
import time

try:
    import torch
except Exception as e:  # the peer is optional
    print(f"skip cannot import torch ({e})", flush=True)
    sys.exit(2)

F64 = torch.float64
DATA = os.environ.get("AD_BENCH_DATA", "bench/data")


def now():
    return time.perf_counter()


def med(v):
    return statistics.median(v) if v else float("nan")


# ---------------------------------------------------------------------------
# eager: y = y*a + b on 1-element tensors.

def case_eager(nops, minsec):
    t0s, t1s, t2s = [], [], []
    chk = 0.0
    start = now()
    r = -1
    while len(t0s) < 3 or now() - start < minsec:
        a = torch.full((1,), 0.5, dtype=F64)
        b = torch.full((1,), 1.0, dtype=F64)
        y = torch.zeros(1, dtype=F64)
        t0 = now()
        for _ in range(nops // 2):
            y = y * a + b
        t1 = now()
        a.requires_grad_(True)
        b.requires_grad_(True)
        z = torch.zeros(1, dtype=F64)
        t2 = now()
        for _ in range(nops // 2):
            z = z * a + b
        t3 = now()
        ga, gb = torch.autograd.grad(z, [a, b])
        val = z.item()
        del z  # frees the graph
        t4 = now()
        if r < 0:
            chk = val + ga.item() + gb.item()
            start = now()
        else:
            t0s.append((t1 - t0) / nops * 1e9)
            t1s.append((t3 - t2) / nops * 1e9)
            t2s.append((t4 - t3) / nops * 1e9)
        r += 1
    return (f"ok noad_ns={med(t0s):.6g} tape_ns={med(t1s):.6g} "
            f"bwd_ns={med(t2s):.6g} reps={len(t0s)} chk={chk!r}")


# ---------------------------------------------------------------------------
# mlp64 / mlp32: 784-256-256-10 tanh, cross-entropy, batch 128: forward,
# backward, SGD update.

class Mlp:
    def __init__(self, dtype):
        import torch.nn.functional as Fn
        self.Fn = Fn
        torch.manual_seed(1234)
        dims = [784, 256, 256, 10]
        self.W, self.b = [], []
        for l in range(3):
            bound = 1.0 / math.sqrt(dims[l])
            w = torch.empty(dims[l + 1], dims[l], dtype=dtype)
            bb = torch.empty(dims[l + 1], dtype=dtype)
            self.W.append(w.uniform_(-bound, bound).requires_grad_())
            self.b.append(bb.uniform_(-bound, bound).requires_grad_())
        self.params = [p for pair in zip(self.W, self.b) for p in pair]
        self.X = torch.randn(128, 784, dtype=dtype)
        self.Y = torch.tensor([(i * 7) % 10 for i in range(128)])

    def step(self, lr):
        t0 = now()
        h = self.X
        for l in range(3):
            h = self.Fn.linear(h, self.W[l], self.b[l])
            if l < 2:
                h = torch.tanh(h)
        loss = self.Fn.cross_entropy(h, self.Y)
        grads = torch.autograd.grad(loss, self.params)
        with torch.no_grad():
            for p, g in zip(self.params, grads):
                p.sub_(g * lr)
        return now() - t0


MLPS = {}


def case_mlp(dtype, minsec):
    m = MLPS.get(dtype)
    if m is None:
        m = MLPS[dtype] = Mlp(dtype)
    for _ in range(2):
        m.step(1e-3)
    t = []
    start = now()
    while len(t) < 3 or now() - start < minsec:
        t.append(m.step(1e-3) * 1e3)
    return f"ok step_ms={med(t):.6g} reps={len(t)}"


# ---------------------------------------------------------------------------
# rosen: vectorized Rosenbrock at x_i = -1.2 + 2.2 i/(n-1); gradient and
# HVP (double backward) along v_i = ((i mod 7) - 3) / 4.

def rosen(x):
    a, b = x[:-1], x[1:]
    t = b - a * a
    u = 1.0 - a
    return torch.sum(100.0 * t * t + u * u)


def case_rosen(n, minsec):
    x = torch.linspace(-1.2, 1.0, n, dtype=F64)
    v = ((torch.arange(n) % 7) - 3).to(F64) * 0.25
    tf, tg, th = [], [], []
    cf = cg = ch = 0.0
    start = now()
    r = -1
    while len(tf) < 3 or now() - start < minsec:
        t0 = now()
        with torch.no_grad():
            fv = rosen(x).item()
        t1 = now()
        xg = x.detach().requires_grad_()
        (g,) = torch.autograd.grad(rosen(xg), xg)
        t2 = now()
        xh = x.detach().requires_grad_()
        (gh,) = torch.autograd.grad(rosen(xh), xh, create_graph=True)
        (hv,) = torch.autograd.grad(gh, xh, grad_outputs=v)
        t3 = now()
        if r < 0:
            cf, cg, ch = fv, (g * g).sum().item(), (hv * hv).sum().item()
            start = now()
        else:
            tf.append((t1 - t0) * 1e3)
            tg.append((t2 - t1) * 1e3)
            th.append((t3 - t2) * 1e3)
        r += 1
    return (f"ok f_ms={med(tf):.6g} grad_ms={med(tg):.6g} hvp_ms={med(th):.6g} "
            f"reps={len(tf)} chk_f={cf!r} chk_g={cg!r} chk_hv={ch!r}")


# ---------------------------------------------------------------------------
# ADBench, from the definitions in the data's README (same vectorized
# formulations as bench/adbench/gmm.h, lstm.h and ba.h).

INSTANCES = {
    "gmm_1k_d2_K5": "gmm/1k/gmm_d2_K5.txt",
    "gmm_1k_d10_K25": "gmm/1k/gmm_d10_K25.txt",
    "gmm_1k_d20_K50": "gmm/1k/gmm_d20_K50.txt",
    "gmm_1k_d64_K100": "gmm/1k/gmm_d64_K100.txt",
    "gmm_10k_d2_K5": "gmm/10k/gmm_d2_K5.txt",
    "gmm_10k_d10_K25": "gmm/10k/gmm_d10_K25.txt",
    "gmm_2.5M_d2_K5": "gmm/2.5M/gmm_d2_K5.txt",
    "gmm_2.5M_d10_K25": "gmm/2.5M/gmm_d10_K25.txt",
    "lstm_l2_c1024": "lstm/lstm_l2_c1024.txt",
    "lstm_l4_c1024": "lstm/lstm_l4_c1024.txt",
    "ba1_n49_m7776_p31843": "ba/ba1_n49_m7776_p31843.txt",
    "ba2_n21_m11315_p36455": "ba/ba2_n21_m11315_p36455.txt",
    "ba5_n257_m65132_p225911": "ba/ba5_n257_m65132_p225911.txt",
}


def numbers(path):
    with open(path) as f:
        return [float(t) for t in f.read().split()]


class Gmm:
    def __init__(self, path):
        v = numbers(path)
        d, K, n = int(v[0]), int(v[1]), int(v[2])
        nicf = d * (d + 1) // 2
        p = 3
        self.alpha = torch.tensor(v[p:p + K], dtype=F64)
        p += K
        self.mu = torch.tensor(v[p:p + K * d], dtype=F64).reshape(K, d)
        p += K * d
        self.icf = torch.tensor(v[p:p + K * nicf], dtype=F64).reshape(K, nicf)
        p += K * nicf
        npts = n if len(v) == p + n * d + 2 else 1
        x = torch.tensor(v[p:p + npts * d], dtype=F64).reshape(npts, d)
        self.x = x.expand(n, d).contiguous() if npts == 1 else x
        p += npts * d
        self.gamma, self.m = v[p], int(v[p + 1])
        self.d, self.K, self.n = d, K, n
        idx = []
        for a in range(d):
            for b in range(d):
                if a == b:
                    idx.append(a)
                elif a > b:
                    idx.append(d + 1 + b * (d - 1) - b * (b - 1) // 2 + (a - b - 1))
                else:
                    idx.append(d)
        self.idx = torch.tensor(idx)
        nw = d + self.m + 1
        C = nw * d * (math.log(self.gamma) - 0.5 * math.log(2)) - (
            d * (d - 1) / 4 * math.log(math.pi)
            + sum(math.lgamma(0.5 * nw + 0.5 * (1 - j)) for j in range(1, d + 1)))
        self.const = -0.5 * n * d * math.log(2 * math.pi) - K * C
        rows = max((1 << 18) // (K * d), 4 * d)
        self.chunk = rows if rows < n else n
        self.nparams = K * (d + 1) * (d + 2) // 2
        self.ones = torch.ones(d, dtype=F64)

    def params(self, alpha, mu, icf):
        d, K = self.d, self.K
        q = icf[:, :d]
        eq = torch.exp(q)
        l = icf[:, d:]
        Qflat = torch.cat([eq, torch.zeros(K, 1, dtype=F64), l], 1)[:, self.idx]
        Qs = Qflat * 0.70710678118654752440
        Q3 = Qs.reshape(K, d, d)
        QallT = Qs.reshape(K * d, d).t()
        nQmu = -(Q3 * mu[:, None, :]).sum(2).reshape(K * d)
        c = alpha + q.sum(1)
        rest = (0.5 * self.gamma ** 2 * ((eq * eq).sum() + (l * l).sum())
                - self.n * torch.logsumexp(alpha, 0) + self.const)
        if self.m:
            rest = rest - self.m * q.sum()
        return QallT, nQmu, c, rest

    def data_term(self, QallT, nQmu, c, x):
        rows, K, d = x.shape[0], self.K, self.d
        z = x @ QallT + nQmu
        if d <= 32:  # ADB_GMM_SMALL_D in gmm.h
            maha = ((z * z).reshape(rows * K, d) @ self.ones).reshape(rows, K)
        else:
            maha = (z.reshape(rows, K, d) ** 2).sum(2)
        return torch.logsumexp(c - maha, 1).sum()

    def chunks(self):
        return [self.x[i:i + self.chunk] for i in range(0, self.n, self.chunk)]

    def f(self):
        with torch.no_grad():
            QallT, nQmu, c, rest = self.params(self.alpha, self.mu, self.icf)
            total = rest
            for xc in self.chunks():
                total = total + self.data_term(QallT, nQmu, c, xc)
            return total

    def j(self):
        ps = [t.detach().requires_grad_() for t in (self.alpha, self.mu, self.icf)]
        QallT, nQmu, c, rest = self.params(*ps)
        if self.chunk >= self.n:
            F = rest + self.data_term(QallT, nQmu, c, self.x)
            g = torch.autograd.grad(F, ps)
        else:  # the same split reverse pass as libad's gmm.h
            leaves = [t.detach().requires_grad_() for t in (QallT, nQmu, c)]
            acc = [torch.zeros_like(t) for t in leaves]
            F = rest.detach()
            for xc in self.chunks():
                term = self.data_term(*leaves, xc)
                for a, gg in zip(acc, torch.autograd.grad(term, leaves)):
                    a += gg
                F = F + term.detach()
            g = torch.autograd.grad([QallT, nQmu, c, rest], ps,
                                    [acc[0], acc[1], acc[2], torch.ones((), dtype=F64)])
        return torch.cat([t.reshape(-1) for t in g]), F


class Lstm:
    def __init__(self, path):
        v = numbers(path)
        l, c, b = int(v[0]), int(v[1]), int(v[2])
        p = 3
        self.main = torch.tensor(v[p:p + 8 * l * b], dtype=F64).reshape(l, 2, 4, b)
        p += 8 * l * b
        self.extra = torch.tensor(v[p:p + 3 * b], dtype=F64).reshape(3, b)
        p += 3 * b
        self.state = torch.tensor(v[p:p + 2 * l * b], dtype=F64).reshape(l, 2, b)
        p += 2 * l * b
        self.seq = torch.tensor(v[p:p + c * b], dtype=F64).reshape(c, b)
        self.l, self.c, self.b = l, c, b
        # X = shift @ H + xpad[t], as bench/adbench/lstm.h: the (l, l)
        # shift has ones below the diagonal, xpad[t] is s_t in row 0.
        self.shift = torch.diag(torch.ones(l - 1, dtype=F64), -1)
        self.xpad = []
        for t in range(c - 1):
            xp = torch.zeros(l, b, dtype=F64)
            xp[0] = self.seq[t]
            self.xpad.append(xp)
        self.ones = torch.ones(l - 1, b, dtype=F64)
        self.masks = [torch.tensor([[1.0 if i <= s else 0.0] for i in range(l)],
                                   dtype=F64) for s in range(l)]
        self.nparams = 8 * l * b + 3 * b

    def objective(self, main, extra):
        # Wavefront over layers, as bench/adbench/lstm.h.
        l, c, b = self.l, self.c, self.b
        T = c - 1
        in_w, out_w, out_b = extra[0:1], extra[1:2], extra[2:3]
        W = [main[:, 0, g, :] for g in range(4)]
        B = [main[:, 1, g, :] for g in range(4)]
        scale = torch.cat([in_w, self.ones], 0)  # in_w folded into row 0
        W[0] = W[0] * scale
        W[2] = W[2] * scale
        H = self.state[:, 0, :]
        C = self.state[:, 1, :]
        hs = []
        for s in range(T + l - 1):
            if l == 1:
                X = self.xpad[s]
            elif s < T:
                X = self.shift @ H + self.xpad[s]
            else:
                X = self.shift @ H
            f = torch.sigmoid(X * W[0] + B[0])
            ig = torch.sigmoid(H * W[1] + B[1])
            o = torch.sigmoid(X * W[2] + B[2])
            g = torch.tanh(H * W[3] + B[3])
            C2 = C * f + ig * g
            H2 = o * torch.tanh(C2)
            if s < l - 1:
                C2 = torch.where(self.masks[s] != 0, C2, C)
                H2 = torch.where(self.masks[s] != 0, H2, H)
            H, C = H2, C2
            if s >= l - 1:
                hs.append(H)
        xs = torch.cat(hs, 0)[l - 1::l]  # the top layer's rows
        y = xs * out_w + out_b
        lse = torch.log(torch.exp(y).sum(1, keepdim=True) + 2.0)
        total = (self.seq[1:] * (y - lse)).sum()
        return -total / (T * b)

    def f(self):
        with torch.no_grad():
            return self.objective(self.main, self.extra)

    def j(self):
        ps = [t.detach().requires_grad_() for t in (self.main, self.extra)]
        F = self.objective(*ps)
        g = torch.autograd.grad(F, ps)
        return torch.cat([t.reshape(-1) for t in g]), F


class Ba:
    """Residuals over chunks of observations, each observation's 15 numbers
    as column views of its gathered camera and point; J by two reverse
    passes per chunk (ones on every e_x, then every e_y), as ba.h."""
    CHUNK = 1024  # ADB_BA_CHUNK

    def __init__(self, path):
        v = numbers(path)
        n, m, p = int(v[0]), int(v[1]), int(v[2])
        full = len(v) == 3 + 11 * n + 3 * m + 3 * p
        q = 3
        cams = torch.tensor(v[q:q + (11 * n if full else 11)], dtype=F64)
        q += 11 * n if full else 11
        X = torch.tensor(v[q:q + (3 * m if full else 3)], dtype=F64)
        q += 3 * m if full else 3
        w = torch.tensor(v[q:q + (p if full else 1)], dtype=F64)
        q += p if full else 1
        feat = torch.tensor(v[q:q + (2 * p if full else 2)], dtype=F64)
        self.cams = cams.reshape(-1, 11).expand(n, 11).contiguous()
        self.X = X.reshape(-1, 3).expand(m, 3).contiguous()
        self.w = w.expand(p).contiguous()
        self.feat = feat.reshape(-1, 2).expand(p, 2).contiguous()
        self.n, self.m, self.p = n, m, p
        i = torch.arange(p)
        self.cidx, self.pidx = i % n, i % m
        self.one = torch.ones((), dtype=F64)
        self.zero = torch.zeros((), dtype=F64)
        self.nparams = 31 * p

    def gather(self, s, e):
        cg = self.cams[self.cidx[s:e]]
        xg = self.X[self.pidx[s:e]]
        return ([cg[:, j] for j in range(11)] + [xg[:, j] for j in range(3)]
                + [self.w[s:e]])

    def reproj(self, v, s, e, zero_rot):
        r, C, X = v[0:3], v[3:6], v[11:14]
        f, x0, y0, k1, k2, w = v[6], v[7], v[8], v[9], v[10], v[14]
        Y = [X[j] - C[j] for j in range(3)]
        t2 = r[0] * r[0] + r[1] * r[1] + r[2] * r[2]
        if zero_rot:
            mask = t2 > 0
            t2 = torch.where(mask, t2, self.one)
        is_ = t2 ** -0.5
        theta = t2 * is_
        cs = torch.cos(theta)
        a = torch.sin(theta) * is_
        bb = (self.one - cs) * (is_ * is_)
        if zero_rot:
            cs = torch.where(mask, cs, self.one)
            a = torch.where(mask, a, self.one)
            bb = torch.where(mask, bb, self.zero)
        k = [r[1] * Y[2] - r[2] * Y[1], r[2] * Y[0] - r[0] * Y[2],
             r[0] * Y[1] - r[1] * Y[0]]
        db = (r[0] * Y[0] + r[1] * Y[1] + r[2] * Y[2]) * bb
        Xc = [Y[j] * cs + k[j] * a + r[j] * db for j in range(3)]
        iz = self.one / Xc[2]
        u0, u1 = Xc[0] * iz, Xc[1] * iz
        rsq = u0 * u0 + u1 * u1
        fL = f * (rsq * (k1 + k2 * rsq) + 1.0)
        feat = self.feat[s:e]
        return (w * (u0 * fL + x0 - feat[:, 0]),
                w * (u1 * fL + y0 - feat[:, 1]))

    def zero_rotation(self):
        return bool((self.cams[:, :3] == 0).all(1).any())

    def chunks(self):
        return [(s, min(s + self.CHUNK, self.p))
                for s in range(0, self.p, self.CHUNK)]

    def f(self):
        with torch.no_grad():
            z = self.zero_rotation()
            parts = []
            for s, e in self.chunks():
                ex, ey = self.reproj(self.gather(s, e), s, e, z)
                parts.append(torch.stack([ex, ey], 1).reshape(-1))
            parts.append(self.one - self.w * self.w)
            return torch.cat(parts)

    def j(self, value=False):
        """The 31p values; also the residuals when value (as ba.h, they
        are assembled only when asked for)."""
        z = self.zero_rotation()
        parts, vals = [], []
        for s, e in self.chunks():
            v = [t.detach().requires_grad_() for t in self.gather(s, e)]
            ex, ey = self.reproj(v, s, e, z)
            ones = torch.ones(e - s, dtype=F64)
            gx = torch.autograd.grad(ex, v, ones, retain_graph=True,
                                     allow_unused=True)
            gy = torch.autograd.grad(ey, v, ones, allow_unused=True)
            g = [t if t is not None else torch.zeros(e - s, dtype=F64)
                 for t in gx + gy]
            parts.append(torch.stack(g, 1).reshape(-1))
            if value:
                vals.append(torch.stack([ex.detach(), ey.detach()],
                                        1).reshape(-1))
        w = self.w.detach().requires_grad_()
        werr = self.one - w * w
        parts.append(torch.autograd.grad(werr, w, torch.ones_like(w))[0])
        vals.append(werr.detach())
        return torch.cat(parts), torch.cat(vals) if value else None


def ba_reference(name, p):
    """The compact reference (lines with '#' are comments) expanded to the
    3p residuals and the 31p CSR values."""
    with open(os.path.join(DATA, "reference", name + "_compact.txt")) as f:
        v = [float(t) for l in f if not l.lstrip().startswith("#")
             for t in l.split()]
    e, werr, block, dw = v[3:5], v[5], v[6:36], v[36]
    rf = torch.tensor(e, dtype=F64).repeat(p).tolist() + [werr] * p
    rj = torch.tensor(block, dtype=F64).repeat(p).tolist() + [dw] * p
    return rf, rj


LOADED = {}


def rho_max(a, b):
    a = torch.as_tensor(a, dtype=F64)
    b = torch.as_tensor(b, dtype=F64)
    return ((a - b).abs() / torch.clamp(a.abs() + b.abs(), min=1.0)).max().item()


def load(name):
    LOADED.clear()
    if name not in INSTANCES:
        return f"error unknown instance {name}"
    path = os.path.join(DATA, INSTANCES[name])
    if name.startswith("ba"):
        inst = Ba(path)
        rf, rj = ba_reference(name, inst.p)
        F1 = inst.f()
        J, F2 = inst.j(True)
        worst = max(rho_max(J, rj), rho_max(F1, rf), rho_max(F2, rf))
        if not worst < 1e-8:
            return f"error Jacobian does not match the reference (rho {worst:.3g})"
        LOADED[name] = inst
        return f"ok rho={worst:.3e} F={F1[0].item()!r}"
    inst = Gmm(path) if name.startswith("gmm") else Lstm(path)
    rf = numbers(os.path.join(DATA, "reference", name + "_F.txt"))
    rj = numbers(os.path.join(DATA, "reference", name + "_J.txt"))
    F1 = inst.f().item()
    J, F2 = inst.j()
    if len(rj) != inst.nparams or J.numel() != inst.nparams:
        return "error reference of the wrong size"
    worst = max(rho_max(J, rj), rho_max([F1, F2.item()], [rf[0], rf[0]]))
    if not worst < 1e-8:
        return f"error gradient does not match the reference (rho {worst:.3g})"
    LOADED[name] = inst
    return f"ok rho={worst:.3e} F={F1!r}"


def batch(name, which, reps):
    inst = LOADED.get(name)
    if inst is None:
        return f"error {name} not loaded"
    fn = inst.j if which == "J" else inst.f
    t0 = now()
    for _ in range(reps):
        fn()
    return f"ok t={(now() - t0) / reps:.9g}"


def main():
    threads = int(os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    print(f"ready pytorch {torch.__version__}", flush=True)
    for line in sys.stdin:
        w = line.split()
        if not w or w[0] == "quit":
            break
        try:
            if w[0] == "run":
                cs, n = w[1], int(w[2]) if len(w) > 2 else 0
                minsec = float(w[3]) if len(w) > 3 else 0.1
                if cs == "eager":
                    out = case_eager(n, minsec)
                elif cs == "mlp64":
                    out = case_mlp(torch.float64, minsec)
                elif cs == "mlp32":
                    out = case_mlp(torch.float32, minsec)
                elif cs == "rosen":
                    out = case_rosen(n, minsec)
                else:
                    out = f"skip pytorch has no case {cs}"
            elif w[0] == "load":
                out = load(w[1])
            elif w[0] == "batch":
                out = batch(w[1], w[2], int(w[3]))
            elif w[0] == "unload":
                LOADED.clear()
                out = "ok"
            else:
                out = "error bad request"
        except Exception as e:  # report, keep serving
            out = "error " + str(e).replace("\n", " ")[:200]
        print(out, flush=True)


if __name__ == "__main__":
    main()
