#!/usr/bin/env bash
# Runs libad's benchmarks and their peers (raw BLAS, PyTorch, ADOL-C) with
# one thread setting for all, then prints a table of the figures beside
# their targets.  Usage: bash bench/run_bench.sh BUILD_DIR
#
# Every figure is one line "case | tool | figure | value | unit"; lines
# starting with '#' are notes.  Peers that are not installed are skipped
# with a note.  AD_BENCH_THREADS (default 1) sets OpenBLAS, OpenMP and torch
# threads alike.
set -u
BUILD=${1:-build}
BIN=$BUILD/bench
HERE=$(cd "$(dirname "$0")" && pwd)
THREADS=${AD_BENCH_THREADS:-1}
# Debian's python3-torch imports from /usr/bin/python3, which may not be
# the first python3 on PATH.  AD_BENCH_PYTHON and AD_BENCH_ADOLC_INCLUDE
# override the peers' locations (pointing them elsewhere skips a peer).
PY=${AD_BENCH_PYTHON:-/usr/bin/python3}
ADOLC_INC=${AD_BENCH_ADOLC_INCLUDE:-/usr/include/adolc}

# The same environment for libad and every peer (see BENCHMARKING.md):
# equal thread counts, OpenMP threads that sleep instead of spinning, and
# malloc that keeps freed memory instead of returning it to the kernel.
export OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
export MKL_NUM_THREADS=$THREADS OMP_WAIT_POLICY=PASSIVE
T=1000000000
export GLIBC_TUNABLES=glibc.malloc.trim_threshold=$T:glibc.malloc.mmap_threshold=$T

results=$(mktemp)
trap 'rm -f "$results"' EXIT

# Run a program, show its output and keep its figure lines.
run() {
  "$@" | tee -a "$results"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || echo "# $(basename "$1") exited with status $rc"
  return "$rc"
}

median() { sort -g | awk '{v[NR] = $1} END {
  if (NR == 0) print "nan";
  else if (NR % 2) print v[(NR + 1) / 2];
  else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "# libad benchmarks on $(getconf _NPROCESSORS_ONLN) CPUs:" \
     "OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=torch threads=$THREADS;" \
     "OMP_WAIT_POLICY=PASSIVE; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
echo "# GLIBC_TUNABLES=$GLIBC_TUNABLES (libad and peers alike)"
echo "# format: case | tool | figure | value | unit"

have_torch=0
if [ -x "$PY" ] && "$PY" -c 'import torch' 2>/dev/null; then
  have_torch=1
else
  echo "# pytorch peer skipped: $PY cannot import torch" \
       "(apt-get install python3-torch)"
fi

have_adolc=0
if [ -d "$ADOLC_INC" ] && command -v g++ >/dev/null; then
  peer=$BIN/adolc_peer
  if [ ! -x "$peer" ] || [ "$HERE/adolc_peer.cpp" -nt "$peer" ]; then
    mkdir -p "$BIN"
    # adolc.pc asks for a boost library that is not needed: link -ladolc.
    # (-I/usr/include would break libstdc++'s #include_next.)
    inc=$(dirname "$ADOLC_INC"); [ "$inc" = /usr/include ] && inc= || inc=-I$inc
    g++ -std=c++14 -O2 -Wall -Wextra $inc "$HERE/adolc_peer.cpp" -ladolc \
        -o "$peer" 2>"$BIN/adolc_peer.log" || rm -f "$peer"
  fi
  if [ -x "$peer" ]; then have_adolc=1
  else
    echo "# adolc peer skipped: it did not build (see $BIN/adolc_peer.log)"
  fi
else
  echo "# adolc peer skipped: $ADOLC_INC or g++ missing" \
       "(apt-get install libadolc-dev g++)"
fi

# Issue 2: the eager core.
run "$BIN/bench_core"

# Issue 3: reverse mode.  With PyTorch, the MLP is timed by torch_mlp.py,
# which alternates PyTorch steps with libad steps served by bench_autodiff.
if [ $have_torch -eq 1 ]; then
  run "$BIN/bench_autodiff" --no-mlp
  run "$PY" "$HERE/torch_mlp.py" "$BIN/bench_autodiff" \
    || { echo "# MLP: falling back to libad alone"
         run "$BIN/bench_autodiff" --mlp; }
else
  run "$BIN/bench_autodiff"
fi

# Issue 4: forward and mixed modes.
if [ $have_adolc -eq 1 ]; then
  run "$BIN/bench_forward" --no-hessian
else
  run "$BIN/bench_forward"
fi
[ $have_torch -eq 1 ] && run "$PY" "$HERE/torch_rosen.py"

if [ $have_adolc -eq 1 ]; then
  # Dense Hessian, n = 100: libad and ADOL-C alternated A B A B ..., seven
  # runs each giving the median of 21 Hessians; the median of the runs is shown.
  la=() ad=()
  for _ in 1 2 3 4 5 6 7; do
    la+=("$("$BIN/bench_forward" --hessian-us 21)")
    ad+=("$("$BIN/adolc_peer" 21)")
  done
  l=$(printf '%s\n' "${la[@]}" | median)
  a=$(printf '%s\n' "${ad[@]}" | median)
  c="hessian n=100 rosenbrock"
  {
    printf '%s | libad | time per Hessian (ad_hessian, alternating with' "$c"
    printf ' adolc, median of 7 runs) | %.1f | us\n' "$l"
    printf '%s | adolc | time per Hessian (hessian(), taped once)' "$c"
    printf ' | %.1f | us\n' "$a"
    awk -v c="$c" -v l="$l" -v a="$a" 'BEGIN {
      printf "%s | libad | libad time / adolc time | %.3f | x\n", c, l / a }'
  } | tee -a "$results"
fi

# Issue 5: gradient checkpointing, peak memory and time of a long chain.
run "$BIN/bench_checkpoint"

# Issue 7: training steps of models built with ad/nn.h (the digits CNN and
# the 784-256-256-10 MLP, forward + backward + Adam), alternating with the
# same models in PyTorch (torch_nn.py drives bench_nn --serve).
if [ $have_torch -eq 1 ]; then
  run "$PY" "$HERE/torch_nn.py" "$BIN/bench_nn" \
    || { echo "# nn: falling back to libad alone"; run "$BIN/bench_nn"; }
else
  run "$BIN/bench_nn"
fi

# Issue 6: the GSL adapters, time per fdf call against a gradient written
# by hand in C (Rosenbrock and logistic regression, the examples' functions).
run "$BIN/bench_gsl"

# Issue 10: tracing.  The scalar Rosenbrock function replayed (forward,
# gradient, Hessian-vector product) against plain C and ADOL-C's tape;
# bench_trace alternates its rounds with the long-lived ADOL-C peer.
tpeer=
if [ $have_adolc -eq 1 ]; then
  tpeer=$BIN/adolc_trace_peer
  if [ ! -x "$tpeer" ] || [ "$HERE/adolc_trace_peer.cpp" -nt "$tpeer" ]; then
    tinc=$(dirname "$ADOLC_INC"); [ "$tinc" = /usr/include ] && tinc= || tinc=-I$tinc
    g++ -std=c++14 -O2 -Wall -Wextra $tinc "$HERE/adolc_trace_peer.cpp" \
        -ladolc -o "$tpeer" 2>"$BIN/adolc_trace_peer.log" || rm -f "$tpeer"
  fi
  [ -x "$tpeer" ] || { echo "# adolc trace peer did not build" \
                            "(see $BIN/adolc_trace_peer.log)"; tpeer=; }
fi
run "$BIN/bench_trace" $tpeer

run "$BIN/bench_core" --canary "end"

# The readable table: label; case; tool; figure prefix; comparison; target;
# unit; peer tool; peer figure prefix.
echo
echo "Figures against their targets ($THREADS thread(s) for OpenBLAS, OpenMP and torch):"
awk -F ' [|] ' -v specs="$(cat <<'EOF'
[2] op chain 1e6 ops, no AD;op chain 1e6 ops;libad;per-op time;<=;100;ns/op;;
[2] ad_matmul n=512 / raw dgemm;matmul n=512;libad;ad_matmul / raw dgemm;>=;0.95;x;;
[2] ad_add 1e7 / C triad bandwidth;add 1e7 doubles;libad;ad_add / triad;>=;0.6;x;;
[3] taped chain: record + backward;taped op chain;libad;recording + backward;<=;300;ns/op;;
[3] tape memory per scalar op;taped op chain;libad;tape memory;report;;B/op;;
[3] MLP step, libad / pytorch;mlp 784;libad;libad time / pytorch time;<=;0.9;x;;
[3] MLP step time;mlp 784;libad;fwd+bwd per step;report;;ms;pytorch;fwd+bwd per step
[3] MLP fraction of dgemm-bound limit;mlp 784;libad;fraction of dgemm-bound;report;;x;pytorch;fraction of dgemm-bound
[3] Rosenbrock 1e6 gradient / f;rosenbrock n=1e6;libad;gradient / function;<=;3;x;pytorch;gradient / function
[4] Rosenbrock 1e6 JVP / f;rosenbrock n=1e6;libad;JVP / function;<=;2.5;x;pytorch;JVP (forward_ad) / function
[4] Rosenbrock 1e6 HVP / f;rosenbrock n=1e6;libad;HVP / function;<=;6;x;pytorch;HVP (double backward) / function
[4] Hessian n=100 time;hessian n=100;libad;time per Hessian;report;;us;adolc;time per Hessian
[5] chain peak memory, plain / ckpt;checkpoint chain;libad;peak memory plain / checkpointed;>=;10;x;;
[5] chain time, checkpointed / plain;checkpoint chain;libad;checkpointed time / plain time;<=;2;x;;
[5] chain peak memory, plain;checkpoint chain;libad;peak memory growth, plain;report;;MiB;;
[5] chain peak memory, checkpointed;checkpoint chain;libad;peak memory growth, checkpointed;report;;MiB;;
[7] CNN train step, libad / pytorch;train cnn digits;libad;libad time / pytorch time;<=;1.0;x;;
[7] CNN train step time;train cnn digits;libad;train step;report;;ms;pytorch;train step
[7] MLP train step, libad / pytorch;train mlp 784;libad;libad time / pytorch time;<=;1.0;x;;
[7] MLP train step time;train mlp 784;libad;train step;report;;ms;pytorch;train step
[6] GSL fdf Rosenbrock n=1e3 / by hand;gsl rosenbrock n=1e3;libad;libad fdf / hand-written fdf;<=;3;x;;
[6] GSL fdf Rosenbrock n=1e5 / by hand;gsl rosenbrock n=1e5;libad;libad fdf / hand-written fdf;<=;3;x;;
[6] GSL fdf Rosenbrock n=2 / by hand;gsl rosenbrock n=2;libad;libad fdf / hand-written fdf;report;;x;;
[6] GSL fdf Rosenbrock n=2 time;gsl rosenbrock n=2;libad;time per fdf call;report;;us;c;time per fdf call
[6] GSL fdf logistic n=1e3 / by hand;gsl logistic n=1e3 m=1e3;libad;libad fdf / hand-written fdf;<=;3;x;;
[6] GSL fdf logistic n=10 m=1e5 / by hand;gsl logistic n=10 m=1e5;libad;libad fdf / hand-written fdf;<=;3;x;;
[6] GSL fdf logistic n=2 / by hand;gsl logistic n=2 m=1e3;libad;libad fdf / hand-written fdf;report;;x;;
[6] GSL fdf logistic, breast cancer;gsl logistic breast cancer;libad;libad fdf / hand-written fdf;report;;x;;
[10] traced gradient n=1e2 / adolc;rosenbrock scalar n=1e2;libad;replayed gradient / adolc gradient();<=;1.0;x;adolc;gradient() on its tape
[10] traced gradient n=1e3 / adolc;rosenbrock scalar n=1e3;libad;replayed gradient / adolc gradient();<=;1.0;x;adolc;gradient() on its tape
[10] traced gradient n=1e4 / adolc;rosenbrock scalar n=1e4;libad;replayed gradient / adolc gradient();<=;1.0;x;adolc;gradient() on its tape
[10] traced hess_vec n=1e2 / adolc;rosenbrock scalar n=1e2;libad;replayed hess_vec / adolc hess_vec();<=;1.0;x;adolc;hess_vec() on its tape
[10] traced hess_vec n=1e3 / adolc;rosenbrock scalar n=1e3;libad;replayed hess_vec / adolc hess_vec();<=;1.0;x;adolc;hess_vec() on its tape
[10] traced hess_vec n=1e4 / adolc;rosenbrock scalar n=1e4;libad;replayed hess_vec / adolc hess_vec();<=;1.0;x;adolc;hess_vec() on its tape
[10] traced forward n=1e2 / plain C;rosenbrock scalar n=1e2;libad;replayed forward / plain C;<=;5;x;C;plain double code
[10] traced forward n=1e3 / plain C;rosenbrock scalar n=1e3;libad;replayed forward / plain C;<=;5;x;C;plain double code
[10] traced forward n=1e4 / plain C;rosenbrock scalar n=1e4;libad;replayed forward / plain C;<=;5;x;C;plain double code
EOF
)" '
function find(c, t, f,   i) {
  for (i = 1; i <= n; i++)
    if (index(cs[i], c) == 1 && tl[i] == t && index(fg[i], f) == 1) return i;
  return 0;
}
NF == 5 && $0 !~ /^#/ { n++; cs[n] = $1; tl[n] = $2; fg[n] = $3; vl[n] = $4; un[n] = $5 }
END {
  fmt = "%-38s %13s  %-20s %-7s %s\n";
  printf fmt, "figure", "libad", "target", "status", "peer";
  m = split(specs, lines, "\n");
  missed = 0;
  for (k = 1; k <= m; k++) {
    if (lines[k] == "") continue;
    split(lines[k], s, ";");
    i = find(s[2], s[3], s[4]);
    val = i ? vl[i] " " un[i] : "-";
    if (s[5] == "report") { tgt = "(reported)"; st = i ? "" : "absent"; }
    else {
      tgt = "target " s[5] " " s[6] " " s[7];
      if (!i) st = "absent";
      else if ((s[5] == "<=" && vl[i] + 0 <= s[6] + 0) ||
               (s[5] == ">=" && vl[i] + 0 >= s[6] + 0)) st = "met";
      else { st = "MISSED"; missed++; }
    }
    peer = "";
    if (s[8] != "") {
      j = find(s[2], s[8], s[9]);
      peer = j ? s[8] " " vl[j] " " un[j] : s[8] " absent";
    }
    printf fmt, s[1], val, tgt, st, peer;
  }
  if (missed) printf "%d target(s) missed.\n", missed;
}' "$results"
