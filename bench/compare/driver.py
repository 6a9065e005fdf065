"""bench-compare's driver: starts libad's and each available peer's server,
runs every case alternating the tools (A B, then B A, ...), prints one line
per figure ("case | tool | figure | value | unit", DESIGN.md section 7) with
the ratios libad / peer, then a readable table, and rewrites the generated
sections of docs/BENCHMARKS.md.

Usage (bench/compare/run.sh sets the environment and builds the servers):
  python3 driver.py --build BUILD --data bench/data --docs docs/BENCHMARKS.md
      [--tool NAME=COMMAND ...] [--skip-note TEXT ...]
Only the Python standard library is used.
"""
import argparse
import datetime
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

# Timing settings.  ADBench's own defaults are 0.5 s and 10 runs; 5 runs
# keep the whole comparison under 10 minutes on 2 cores (AD_BENCH_ADBENCH_RUNS
# raises it).
ADB_MIN_TIME = float(os.environ.get("AD_BENCH_ADBENCH_MIN_TIME", "0.5"))
ADB_RUNS = int(os.environ.get("AD_BENCH_ADBENCH_RUNS", "5"))
ADB_TIME_LIMIT = 8.0  # seconds of batches per tool, instance and F/J (>= 1 sample)
ROUNDS = int(os.environ.get("AD_BENCH_ROUNDS", "7"))

TARGETS = {"gmm": 3.0, "lstm": 4.0}  # BA has none: its J/F is reported

# Published J/F from the ADBench paper (arXiv:1807.10129; the relative
# runtime tables of its LaTeX source): GMM with 10k points, the
# 30-parameter column = d2 K5; BA, the 3.18e4-measurement column = ba1
# (31,843 observations).  For the table only.
PUBLISHED = {"gmm_10k_d2_K5": [("Manual (C++)", 1.88), ("Tapenade", 3.74),
                               ("ADOL-C", 13.1), ("Adept", 10.9),
                               ("Theano", 6.2)],
             "ba1_n49_m7776_p31843": [("Manual (C++)", 6.72),
                                      ("Tapenade", 8.78), ("ADOL-C", 288.0),
                                      ("Adept", 25.4), ("Ceres", 86.2),
                                      ("Theano", 9.24)]}

LOAD = {}       # load averages at start and end
LINES = []      # every figure line
RATIOS = []     # (case, label, libad value, peer, peer value, unit, ratio)
OUTPUT = []     # every printed line, for results.txt


def emit(text):
    print(text, flush=True)
    OUTPUT.append(text)


def fmt(v):
    a = abs(v)
    if a != 0 and a < 0.01:
        return f"{v:.2e}"
    prec = 0 if a >= 1000 else 1 if a >= 100 else 2 if a >= 10 else 3
    return f"{v:.{prec}f}"


def line(case, tool, figure, value, unit):
    LINES.append((case, tool, figure, value, unit))
    emit(f"{case} | {tool} | {figure} | {fmt(value)} | {unit}")


def ratio(case, label, lv, peer, pv, unit):
    """A libad / peer line, remembered with both values for the table."""
    if lv is None or pv is None or pv == 0:
        return
    RATIOS.append((case, label, lv, peer, pv, unit, lv / pv))
    line(case, "libad", f"libad / {peer}: {label}", lv / pv, "x")


def note(text):
    emit(f"# {text}")


# ---------------------------------------------------------------------------
# Servers

class Server:
    def __init__(self, name, argv, env):
        self.name, self.dead, self.why = name, False, ""
        try:
            self.p = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True,
                                      bufsize=1, env=env)
        except OSError as e:
            self.dead, self.why = True, str(e)
            return
        first = self.p.stdout.readline().strip()
        if not first.startswith("ready"):
            err = self.p.stderr.read()[-300:] if self.p.poll() is not None else ""
            self.dead = True
            self.why = (first or "no answer") + (" " + err.strip() if err else "")
            self.close()
        else:
            self.banner = first[len("ready"):].strip()

    def ask(self, request):
        if self.dead:
            return None
        try:
            self.p.stdin.write(request + "\n")
            self.p.stdin.flush()
            reply = self.p.stdout.readline().strip()
        except (BrokenPipeError, OSError):
            reply = ""
        if not reply:
            self.dead = True
            err = ""
            try:
                if self.p.poll() is not None:
                    err = self.p.stderr.read()[-300:].strip()
            except OSError:
                pass
            self.why = f"exited during '{request}'" + (f": {err}" if err else "")
            note(f"{self.name}: {self.why}")
            return None
        return reply

    def close(self):
        try:
            if self.p.poll() is None:
                self.p.stdin.write("quit\n")
                self.p.stdin.flush()
                self.p.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self.p.kill()


def parse(reply):
    """'ok a=1 b=2' -> {'a': 1.0, 'b': 2.0}; None for skip/error."""
    if not reply or not reply.startswith("ok"):
        return None
    out = {}
    for w in reply.split()[1:]:
        k, _, v = w.partition("=")
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out


# ---------------------------------------------------------------------------
# Micro cases: each sample is one server call; tools alternate, the order
# flipping every round; the median over rounds is reported.

def alternate(servers, requests, rounds):
    """requests: {tool: request}.  Returns {tool: {key: [values]}}."""
    tools = [t for t in requests if t in servers and not servers[t].dead]
    got = {t: {} for t in tools}
    for r in range(rounds):
        order = tools if r % 2 == 0 else tools[::-1]
        for t in order:
            reply = servers[t].ask(requests[t])
            d = parse(reply)
            if d is None:
                if reply and reply.startswith(("skip", "error")) and r == 0:
                    note(f"{t}: {reply}")
                continue
            for k, v in d.items():
                got[t].setdefault(k, []).append(v)
    return {t: v for t, v in got.items() if v}


def medians(samples):
    return {k: statistics.median(v) for k, v in samples.items()}


def check_same(case, res, keys, rel=1e-8):
    """Every tool's checksums must agree with libad's (same inputs)."""
    if "libad" not in res:
        return
    for t, d in res.items():
        if t == "libad":
            continue
        for k in keys:
            if k in d and k in res["libad"]:
                a, b = res["libad"][k], d[k]
                if abs(a - b) > rel * max(1.0, abs(a) + abs(b)):
                    note(f"WARNING {case}: {t} {k}={b!r} differs from libad's {a!r}")


def ratio_lines(case, res, figures, peers):
    """figures: [(key, label, unit)] -> one ratio line per peer and figure."""
    if "libad" not in res:
        return
    for p in peers:
        if p not in res:
            continue
        for key, label, unit in figures:
            ratio(case, label, res["libad"].get(key), p, res[p].get(key), unit)


def run_eager(servers):
    case = "eager 1-element ops (y = y*a + b, chain of 20000)"
    req = {t: "run eager 20000 0.1" for t in ("libad", "pytorch", "libtorch")}
    res = {t: medians(v) for t, v in alternate(servers, req, ROUNDS).items()}
    check_same(case, res, ["chk"])
    figs = [("noad_ns", "per-op time, no AD", "ns/op"),
            ("tape_ns", "per-op time, recording a tape", "ns/op"),
            ("bwd_ns", "per-op time, backward pass", "ns/op")]
    for t, d in res.items():
        for key, label, unit in figs:
            line(case, t, f"{label} (median of {ROUNDS} alternating samples)"
                 if key == "noad_ns" else label, d[key], unit)
    ratio_lines(case, res, figs, ["pytorch", "libtorch"])


def run_mlp(servers):
    case = "mlp 784-256-256-10 tanh b128 training step"
    req = {t: "run mlp64 0 0.1" for t in ("libad", "pytorch", "libtorch")}
    res = {t: medians(v) for t, v in alternate(servers, req, ROUNDS).items()}
    for t, d in res.items():
        line(case + " f64", t, "fwd + bwd + SGD step (median)", d["step_ms"], "ms")
    ratio_lines(case + " f64", res, [("step_ms", "step time", "ms")],
                ["pytorch", "libtorch"])
    req = {"libad": "run mlp64 0 0.1", "pytorch": "run mlp32 0 0.1",
           "libtorch": "run mlp32 0 0.1"}
    res = {t: medians(v) for t, v in alternate(servers, req, ROUNDS).items()}
    for t, d in res.items():
        if t == "libad":
            line(case + " f32", t, "fwd + bwd + SGD step, libad in float64 "
                 "(its only dtype)", d["step_ms"], "ms")
        else:
            line(case + " f32", t, "fwd + bwd + SGD step, float32",
                 d["step_ms"], "ms")
    ratio_lines(case + " f32", res,
                [("step_ms", "step time (libad f64 vs peer f32)", "ms")],
                ["pytorch", "libtorch"])


def run_rosen(servers):
    for n, minsec, tag in ((1000, 0.05, "1e3"), (100000, 0.1, "1e5"),
                           (1000000, 0.25, "1e6")):
        case = f"rosenbrock vectorized n={tag}"
        req = {t: f"run rosen {n} {minsec}" for t in ("libad", "pytorch", "libtorch")}
        res = {t: medians(v) for t, v in alternate(servers, req, ROUNDS).items()}
        check_same(case, res, ["chk_f", "chk_g", "chk_hv"])
        for d in res.values():
            d["grad_f"] = d["grad_ms"] / d["f_ms"]
            d["hvp_f"] = d["hvp_ms"] / d["f_ms"]
        for t, d in res.items():
            line(case, t, "function time (median)", d["f_ms"], "ms")
            line(case, t, "gradient time", d["grad_ms"], "ms")
            hv = "HVP time (fwd-over-rev)" if t == "libad" else \
                "HVP time (double backward)"
            line(case, t, hv, d["hvp_ms"], "ms")
            line(case, t, "gradient / function", d["grad_f"], "x")
            line(case, t, "HVP / function", d["hvp_f"], "x")
        ratio_lines(case, res, [("grad_f", "gradient / function", "x"),
                                ("hvp_f", "HVP / function", "x"),
                                ("grad_ms", "gradient time", "ms"),
                                ("hvp_ms", "HVP time", "ms")],
                    ["pytorch", "libtorch"])


def run_rscalar(servers):
    for n, minsec in ((100, 0.1), (1000, 0.2)):
        case = f"rosenbrock scalar loop n={n}"
        req = {t: f"run rscalar {n} {minsec}" for t in ("libad", "adolc")}
        res = {t: medians(v) for t, v in alternate(servers, req, ROUNDS).items()}
        check_same(case, res, ["chk_f", "chk_g", "chk_hv", "chk_H"], rel=1e-6)
        for t, d in res.items():
            if t == "libad":
                line(case, t, "function time (1-element tensors, no AD)",
                     d["f_us"], "us")
                line(case, t, "gradient (tape recorded each call)",
                     d["grad_us"], "us")
                line(case, t, "HVP (fwd-over-rev, recorded each call)",
                     d["hvp_us"], "us")
                if "hess_us" in d:
                    line(case, t, "dense Hessian (n HVPs)", d["hess_us"], "us")
            else:
                line(case, t, "plain double loop (no AD)", d["plain_us"], "us")
                line(case, t, "function() on the tape", d["f_us"], "us")
                line(case, t, "gradient() (taped once)", d["grad_us"], "us")
                line(case, t, "hess_vec() (taped once)", d["hvp_us"], "us")
                if "hess_us" in d:
                    line(case, t, "hessian() (taped once)", d["hess_us"], "us")
                line(case, t, "trace_on..off + gradient() each call",
                     d["grad_retape_us"], "us")
        if "libad" in res and "adolc" in res:
            a, p = res["libad"], res["adolc"]
            ratio(case, "gradient (adolc taped once)", a["grad_us"], "adolc",
                  p["grad_us"], "us")
            ratio(case, "gradient (adolc retaped each call)", a["grad_us"],
                  "adolc", p["grad_retape_us"], "us")
            ratio(case, "HVP (adolc hess_vec)", a["hvp_us"], "adolc",
                  p["hvp_us"], "us")
            if "hess_us" in a and "hess_us" in p:
                ratio(case, "dense Hessian (adolc hessian())", a["hess_us"],
                      "adolc", p["hess_us"], "us")


# ---------------------------------------------------------------------------
# ADBench: F and J timed the ADBench way (repeats doubled until a batch
# takes >= ADB_MIN_TIME; then batches until ADB_RUNS samples; minimum
# per-call time), batches of the tools alternating.

ADB_INSTANCES = ["gmm_1k_d2_K5", "gmm_1k_d10_K25", "gmm_1k_d20_K50",
                 "gmm_1k_d64_K100", "gmm_10k_d2_K5", "gmm_10k_d10_K25",
                 "gmm_2.5M_d2_K5", "gmm_2.5M_d10_K25", "lstm_l2_c1024",
                 "lstm_l4_c1024", "ba1_n49_m7776_p31843",
                 "ba2_n21_m11315_p36455", "ba5_n257_m65132_p225911"]
# Instances a peer skips for time (it would take minutes).
PEER_SKIP = {"pytorch": {"gmm_2.5M_d10_K25"}}


def adb_kind(name):
    """'gmm_1k_d2_K5' -> 'gmm', 'ba1_n49_m7776_p31843' -> 'ba'."""
    return name.split("_")[0].rstrip("0123456789")


ADB_SUMMARY = []


def adb_batch(server, name, which, reps):
    d = parse(server.ask(f"batch {name} {which} {reps}"))
    return None if d is None else d["t"]


def adb_measure(servers, tools, name):
    """F and J of every tool, their batches interleaved (tool by tool, F
    then J, the tool order flipping every round), so that a slow phase of
    the host falls on F and J, and on libad and its peers, alike.  Returns
    {(tool, which): (minimum seconds per call, samples)}."""
    state = {}
    for t in tools:
        for which in ("F", "J"):
            t1 = adb_batch(servers[t], name, which, 1)
            if t1 is None:
                continue
            reps = 1
            while reps * t1 < ADB_MIN_TIME and reps < (1 << 30):
                reps *= 2
            state[(t, which)] = {"reps": reps,
                                 "samples": [t1] if reps == 1 else [],
                                 "spent": t1}
    for r in range(ADB_RUNS + 8):
        keys = list(state) if r % 2 == 0 else [
            (t, w) for t in list(tools)[::-1] for w in ("F", "J")
            if (t, w) in state]
        busy = False
        for key in keys:
            s = state[key]
            if len(s["samples"]) >= ADB_RUNS or (
                    s["samples"] and s["spent"] > ADB_TIME_LIMIT):
                continue
            busy = True
            tt = adb_batch(servers[key[0]], name, key[1], s["reps"])
            if tt is None:
                s["samples"] = s["samples"] or [float("nan")]
                continue
            s["spent"] += tt * s["reps"]
            if tt * s["reps"] < ADB_MIN_TIME:  # too short: not a sample
                s["reps"] *= 2
            else:
                s["samples"].append(tt)
        if not busy:
            break
    return {k: (min(s["samples"]), len(s["samples"]))
            for k, s in state.items() if s["samples"]}


def run_adbench(specs, env):
    """specs: {tool: argv}.  As ADBench does, every tool gets a fresh
    process for every instance (a long-lived process would carry its
    allocator's state from one instance to the next)."""
    for name in ADB_INSTANCES:
        case = "adbench " + name.replace("_", " ")
        servers = {}
        for t, argv in specs.items():
            if name in PEER_SKIP.get(t, ()):
                note(f"{case}: {t} skipped (several minutes per run)")
                continue
            s = Server(t, argv, env)
            if s.dead:
                note(f"{case}: {t} did not start: {s.why}")
            else:
                servers[t] = s
        loaded = []
        for t in servers:
            reply = servers[t].ask(f"load {name}")
            d = parse(reply)
            if d is None:
                note(f"{case}: {t} not timed: {reply}")
                continue
            line(case, t, "max rho of F and J vs reference (< 1e-8, checked "
                 "before timing)", d["rho"], "rho")
            loaded.append(t)
        if not loaded:
            continue
        m = adb_measure(servers, loaded, name)
        res = {}
        for t in loaded:
            if (t, "F") in m and (t, "J") in m:
                (tf, nf), (tj, nj) = m[(t, "F")], m[(t, "J")]
                res[t] = (tf, tj)
                line(case, t, f"objective time F (min of {nf} batches "
                     f">= {ADB_MIN_TIME:g} s)", tf * 1e6, "us")
                line(case, t, f"gradient time J (min of {nj} batches)",
                     tj * 1e6, "us")
                line(case, t, "J/F", tj / tf, "x")
        for srv in servers.values():
            srv.close()
        if "libad" in res:
            kind = adb_kind(name)
            jf = res["libad"][1] / res["libad"][0]
            if kind in TARGETS:
                ADB_SUMMARY.append((name, jf, TARGETS[kind]))
            for p in ("pytorch",):
                if p in res:
                    ratio(case, "F time", res["libad"][0] * 1e6, p,
                          res[p][0] * 1e6, "us")
                    ratio(case, "J time", res["libad"][1] * 1e6, p,
                          res[p][1] * 1e6, "us")
                    ratio(case, "J/F", jf, p, res[p][1] / res[p][0], "x")
        for tool, v in PUBLISHED.get(name, []):
            line(case, f"{tool} (published, 2018 paper)", "J/F", v, "x")


# ---------------------------------------------------------------------------
# Table and docs

def machine_lines(servers, threads):
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for l in f:
                if l.startswith("model name"):
                    cpu = l.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    cc = subprocess.run(["cc", "--version"], capture_output=True, text=True)
    ccv = cc.stdout.splitlines()[0] if cc.returncode == 0 else "cc ?"

    def pkg(name):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name],
                           capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 and r.stdout else "absent"

    peers = ", ".join(f"{n} ({getattr(s, 'banner', '') or 'on'})"
                      for n, s in servers.items() if not s.dead)
    return [
        f"- Date: {datetime.datetime.now():%Y-%m-%d %H:%M}",
        f"- CPU: {cpu}, {os.cpu_count()} logical CPUs, {mem}; "
        f"{platform.system()} {platform.release()}",
        f"- Compiler: {ccv}, libad built with -O2; OpenBLAS "
        f"{pkg('libopenblas0-pthread') if pkg('libopenblas0-pthread') != 'absent' else pkg('libopenblas0')}"
        f" (OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')})",
        f"- Peers: PyTorch {pkg('python3-torch')} (python3-torch), libtorch "
        f"{pkg('libtorch-dev')} (libtorch-dev), ADOL-C {pkg('libadolc-dev')}; "
        f"running: {peers}",
        f"- Threads: {threads} for OpenBLAS, OpenMP and torch; "
        f"OMP_WAIT_POLICY=PASSIVE; GLIBC_TUNABLES="
        f"{os.environ.get('GLIBC_TUNABLES', 'unset')} (libad and peers alike)",
        f"- Host load (1-minute load average, other jobs included): "
        f"{LOAD.get('start', 0):.2f} at start, {LOAD.get('end', 0):.2f} at end",
    ]


def table():
    """Markdown table: one row per libad / peer ratio, with both values."""
    rows = ["| case | figure | libad | peer | peer's figure | libad / peer |",
            "|---|---|---|---|---|---|"]
    for c, label, lv, peer, pv, unit, r in RATIOS:
        rows.append(f"| {c} | {label} | {fmt(lv)} {unit} | {peer} | "
                    f"{fmt(pv)} {unit} | {fmt(r)} |")
    return rows


def adbench_table(lines_):
    rows = ["| instance | libad F | libad J | libad J/F | target | "
            "PyTorch F | PyTorch J | PyTorch J/F |",
            "|---|---|---|---|---|---|---|---|"]
    for name in ADB_INSTANCES:
        c = "adbench " + name.replace("_", " ")
        vals = {}
        for cc, t, f, v, u in lines_:
            if cc != c:
                continue
            for key, pre in (("F", "objective time F"), ("J", "gradient time J"),
                             ("JF", "J/F")):
                if f.startswith(pre):
                    vals[(t, key)] = v
        if not vals:
            continue
        kind = adb_kind(name)
        jf = vals.get(("libad", "JF"))
        tgt = f"<= {TARGETS[kind]:g}" if kind in TARGETS else "-"
        if jf is not None and kind in TARGETS:
            tgt += " met" if jf <= TARGETS[kind] else " **MISSED**"

        def g(t, k, unit=""):
            v = vals.get((t, k))
            return "-" if v is None else fmt(v) + unit
        rows.append(f"| {name} | {g('libad', 'F', ' us')} | {g('libad', 'J', ' us')} "
                    f"| {g('libad', 'JF')} | {tgt} | {g('pytorch', 'F', ' us')} | "
                    f"{g('pytorch', 'J', ' us')} | {g('pytorch', 'JF')} |")
    return rows


def ahead_behind():
    ahead = [r for r in RATIOS if r[6] < 1]
    return ahead, [r for r in RATIOS if r[6] >= 1]


def write_docs(path, servers, threads, elapsed):
    if not path or not os.path.exists(path):
        note(f"{path}: not found, table not written")
        return
    with open(path) as f:
        text = f.read()
    gen = [f"Generated by `make bench-compare` in {elapsed:.0f} s.", ""]
    gen += machine_lines(servers, threads)
    gen += ["", "### Every ratio (libad / peer; below 1 libad is faster, "
            "or its ratio to the function is smaller)", ""]
    gen += table()
    gen += ["", "### ADBench (F and J the ADBench way: minimum per-call time "
            f"over batches of >= {ADB_MIN_TIME:g} s, up to {ADB_RUNS} batches "
            "per tool, instance and F/J)", ""]
    gen += adbench_table(LINES)
    skipped = [n for t, ns in PEER_SKIP.items() for n in sorted(ns)]
    if skipped:
        gen += ["", "PyTorch is not run on " + ", ".join(skipped) +
                " (several minutes per run)."]
    for name in PUBLISHED:
        c = "adbench " + name.replace("_", " ")
        pub = [l for l in LINES if "(published" in l[1] and l[0] == c]
        if pub:
            gen += ["", f"Published J/F on {c[len('adbench '):]} (ADBench "
                    "paper, 2018, other machine): " + ", ".join(
                        f"{t.split(' (published')[0]} {fmt(v)}"
                        for _c, t, _f, v, _u in pub)]
    ahead, behind = ahead_behind()
    gen += ["", f"libad ahead on {len(ahead)} ratios, behind on {len(behind)}.",
            ""]
    gen += ["<details><summary>All raw lines</summary>", "", "```"]
    gen += [l for l in OUTPUT if not l.startswith("Figures")]
    gen += ["```", "", "</details>"]
    begin, end = "<!-- bench-compare:begin -->", "<!-- bench-compare:end -->"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + begin + "\n" + "\n".join(gen) + "\n" + end + tail
    else:
        text += "\n" + begin + "\n" + "\n".join(gen) + "\n" + end + "\n"
    with open(path, "w") as f:
        f.write(text)
    note(f"wrote the generated section of {path}")


# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--data", default="bench/data")
    ap.add_argument("--docs", default="docs/BENCHMARKS.md")
    ap.add_argument("--tool", action="append", default=[],
                    help="NAME=COMMAND of a server to start")
    ap.add_argument("--skip-note", action="append", default=[])
    ap.add_argument("--only", default="",
                    help="comma list of parts: eager,mlp,rosen,rscalar,adbench")
    args = ap.parse_args()
    t_start = time.monotonic()
    LOAD["start"] = os.getloadavg()[0]
    threads = int(os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    env = dict(os.environ, AD_BENCH_DATA=args.data)
    note(f"bench-compare: libad against its peers, {threads} thread(s); format: "
         "case | tool | figure | value | unit")
    note("tools alternate A B, B A, ... ; micro figures are medians of "
         f"{ROUNDS} alternating samples, each a median over >= 3 repetitions")
    for s in args.skip_note:
        note(s)
    servers, specs = {}, {}
    for spec in args.tool:
        name, _, cmd = spec.partition("=")
        specs[name] = shlex.split(cmd)
        if name == "libad-adbench":
            continue  # started per ADBench instance
        s = Server(name, specs[name], env)
        if s.dead:
            note(f"{name} peer skipped: {s.why}")
        else:
            servers[name] = s
    if "libad" not in servers:
        note("libad's server did not start; nothing to compare")
        return 1
    parts = args.only.split(",") if args.only else \
        ["eager", "mlp", "rosen", "rscalar", "adbench"]

    def canary(where):
        d = parse(servers["libad"].ask("run canary"))
        if d:
            line("canary", "host", f"canary (fixed workload) at {where}",
                 d["ms"], "ms")

    canary("start")
    if "eager" in parts:
        run_eager(servers)
    if "mlp" in parts:
        run_mlp(servers)
    if "rosen" in parts:
        run_rosen(servers)
    if "rscalar" in parts:
        run_rscalar(servers)
    canary("middle")
    if "adbench" in parts and "libad-adbench" in specs:
        adb = {"libad": specs["libad-adbench"]}
        if "pytorch" in servers:
            adb["pytorch"] = specs["pytorch"]
        run_adbench(adb, env)
    canary("end")
    LOAD["end"] = os.getloadavg()[0]
    note(f"1-minute load average: {LOAD['start']:.2f} at start, "
         f"{LOAD['end']:.2f} at end ({os.cpu_count()} CPUs)")
    elapsed = time.monotonic() - t_start
    for s in servers.values():
        s.close()

    emit("")
    emit(f"Figures (libad / peer ratios; {threads} thread(s)); "
         f"run took {elapsed:.0f} s:")
    for r in table():
        emit(r)
    emit("")
    for r in adbench_table(LINES):
        emit(r)
    missed = [(n, jf, tg) for n, jf, tg in ADB_SUMMARY if jf > tg]
    emit("")
    for n, jf, tg in ADB_SUMMARY:
        emit(f"ADBench {n}: libad J/F {fmt(jf)} (target <= {tg:g}): "
             f"{'met' if jf <= tg else 'MISSED by ' + fmt(jf / tg) + 'x'}")
    if missed:
        emit(f"{len(missed)} ADBench target(s) missed; see docs/BENCHMARKS.md.")
    os.makedirs(os.path.join(args.build, "compare"), exist_ok=True)
    with open(os.path.join(args.build, "compare", "results.txt"), "w") as f:
        f.write("\n".join(OUTPUT) + "\n")
    if not args.only:
        write_docs(args.docs, servers, threads, elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
