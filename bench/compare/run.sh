#!/usr/bin/env bash
# bench-compare: builds libad's benchmark servers and those peers that are
# installed (libtorch-dev, libadolc-dev; python3-torch needs no build), then
# runs bench/compare/driver.py, which alternates libad with every peer,
# prints one line per figure and rewrites the generated part of
# docs/BENCHMARKS.md.  Installs nothing; a missing peer is skipped with a
# note.  Usage: bash bench/compare/run.sh BUILD_DIR (after building
# BUILD_DIR/libad.a, as `make bench-compare` does).
#
# Environment: AD_BENCH_THREADS (default 1) sets OpenBLAS, OpenMP and torch
# threads alike; AD_BENCH_PYTHON (default /usr/bin/python3) is the
# interpreter that imports torch; AD_BENCH_ONLY=eager,mlp,rosen,rscalar,
# adbench runs a subset (and leaves the docs alone).
set -u
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT" || exit 1
OUT=$BUILD/compare
THREADS=${AD_BENCH_THREADS:-1}
PY=${AD_BENCH_PYTHON:-/usr/bin/python3}
mkdir -p "$OUT"

# The same environment for libad and every peer (shared/BENCHMARKING.md):
# equal thread counts, OpenMP threads that sleep instead of spinning, and
# malloc that keeps freed memory instead of returning it to the kernel.
export OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
export MKL_NUM_THREADS=$THREADS OMP_WAIT_POLICY=PASSIVE
T=1000000000
export GLIBC_TUNABLES=glibc.malloc.trim_threshold=$T:glibc.malloc.mmap_threshold=$T

if [ ! -f "$BUILD/libad.a" ]; then
  echo "bench-compare: $BUILD/libad.a is missing (run make first)" >&2
  exit 1
fi

# libad's programs, compiled like the Makefile compiles benchmarks.
CC=${CC:-cc}
CFLAGS_B="-std=c11 -O2 -g -Wall -Wextra -Wpedantic -Wshadow -Werror -fPIC \
  -pthread -D_POSIX_C_SOURCE=200809L -Iinclude -Ibench \
  $(pkg-config --cflags openblas gsl 2>/dev/null)"
LIBS_B="$BUILD/libad.a \
  $(pkg-config --libs gsl 2>/dev/null | sed 's/-lgslcblas//') \
  $(pkg-config --libs openblas 2>/dev/null) -lm -pthread"
build_c() { # output, sources...
  local out=$1; shift
  local stale=0 f
  [ -x "$out" ] || stale=1
  for f in "$@" "$BUILD/libad.a" bench/bench_util.h bench/adbench/*.h; do
    [ "$f" -nt "$out" ] && stale=1
  done
  [ $stale -eq 0 ] && return 0
  # shellcheck disable=SC2086
  $CC $CFLAGS_B "$1" $LIBS_B -o "$out"
}
build_c "$OUT/libad_peer" bench/compare/libad_peer.c || exit 1
build_c "$OUT/adbench" bench/adbench/adbench.c || exit 1

tools=(--tool "libad=$OUT/libad_peer"
       --tool "libad-adbench=$OUT/adbench --serve --data bench/data")
notes=()

# PyTorch (python3-torch): no build; it must import.
if [ -x "$PY" ] && "$PY" -c 'import torch' 2>/dev/null; then
  tools+=(--tool "pytorch=$PY $HERE/torch_peer.py")
else
  notes+=(--skip-note "pytorch peer skipped: $PY cannot import torch (apt-get install python3-torch)")
fi

# libtorch (libtorch-dev): compiled once, kept in $OUT.
TORCH_INC=/usr/include/torch/csrc/api/include
if [ -f "$TORCH_INC/torch/torch.h" ] && command -v g++ >/dev/null; then
  p=$OUT/libtorch_peer
  if [ ! -x "$p" ] || [ "$HERE/libtorch_peer.cpp" -nt "$p" ]; then
    echo "# compiling the libtorch peer (about 20 s, once)"
    g++ -std=c++17 -O2 -I"$TORCH_INC" "$HERE/libtorch_peer.cpp" \
        -ltorch -ltorch_cpu -lc10 -o "$p" 2>"$OUT/libtorch_peer.log" \
      || rm -f "$p"
  fi
  if [ -x "$p" ]; then tools+=(--tool "libtorch=$p")
  else notes+=(--skip-note "libtorch peer skipped: it did not build (see $OUT/libtorch_peer.log)"); fi
else
  notes+=(--skip-note "libtorch peer skipped: libtorch-dev or g++ missing (apt-get install libtorch-dev g++)")
fi

# ADOL-C (libadolc-dev): adolc.pc asks for a boost library that is not
# needed; link -ladolc alone.
if [ -f /usr/include/adolc/adolc.h ] && command -v g++ >/dev/null; then
  p=$OUT/adolc_peer
  if [ ! -x "$p" ] || [ "$HERE/adolc_peer.cpp" -nt "$p" ]; then
    g++ -std=c++14 -O2 -Wall -Wextra "$HERE/adolc_peer.cpp" -ladolc -o "$p" \
        2>"$OUT/adolc_peer.log" || rm -f "$p"
  fi
  if [ -x "$p" ]; then tools+=(--tool "adolc=$p")
  else notes+=(--skip-note "adolc peer skipped: it did not build (see $OUT/adolc_peer.log)"); fi
else
  notes+=(--skip-note "adolc peer skipped: libadolc-dev or g++ missing (apt-get install libadolc-dev g++)")
fi

# The driver needs only Python's standard library.
DRIVER_PY=python3
[ -x "$PY" ] && DRIVER_PY=$PY
if ! command -v "$DRIVER_PY" >/dev/null; then
  echo "bench-compare: no python3 to run the driver" >&2
  exit 1
fi
only=()
[ -n "${AD_BENCH_ONLY:-}" ] && only=(--only "$AD_BENCH_ONLY")
exec "$DRIVER_PY" "$HERE/driver.py" --build "$BUILD" --data bench/data \
  --docs docs/BENCHMARKS.md "${tools[@]}" "${notes[@]}" "${only[@]}"
