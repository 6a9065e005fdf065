#!/usr/bin/env bash
# Builds the libFuzzer target build/fuzz/fuzz_ad with clang from the library
# sources themselves (src/*.c autodiff/*.c), instrumented for libFuzzer's
# coverage and checked by AddressSanitizer (with LeakSanitizer) and
# UndefinedBehaviorSanitizer.  Independent of the Makefile, which builds
# with gcc.
#
#   tests/fuzz/build.sh            -> build/fuzz/fuzz_ad (and fuzz_replay)
#   CLANG=clang-14 FUZZ_BUILD=dir tests/fuzz/build.sh
#
# fuzz_replay is the same target without libFuzzer (tests/fuzz/
# replay_main.c): it runs the files named on its command line, for
# debugging a reproducer with gdb.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLANG=${CLANG:-clang}
OUT=${FUZZ_BUILD:-build/fuzz}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

if ! command -v "$CLANG" >/dev/null 2>&1; then
  echo "tests/fuzz/build.sh: $CLANG not found (apt-get install clang" \
       "libclang-rt-14-dev, or set CLANG)" >&2
  exit 2
fi

PKG_CFLAGS=$(pkg-config --cflags openblas gsl)
PKG_LIBS="$(pkg-config --libs gsl | sed 's/-lgslcblas//') $(pkg-config --libs openblas)"
WARN="-Wall -Wextra -Wpedantic -Wshadow -Werror"
CFLAGS="-std=c11 -O1 -g -fno-omit-frame-pointer $WARN -pthread \
  -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc -Iautodiff $PKG_CFLAGS"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all"

mkdir -p "$OUT/obj"
# Objects are rebuilt when their source or any header is newer.
newest_header=$(ls -t include/*.h include/ad/*.h src/*.h autodiff/*.h | head -1)
objs=()
todo=()
for src in src/*.c autodiff/*.c; do
  obj="$OUT/obj/$(echo "${src%.c}" | tr / _).o"
  objs+=("$obj")
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ "$newest_header" -nt "$obj" ]; then
    todo+=("$src")
  fi
done
compile() {
  local src=$1 obj
  obj="$OUT/obj/$(echo "${src%.c}" | tr / _).o"
  # shellcheck disable=SC2086
  $CLANG $CFLAGS $SAN -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
}
export -f compile
export CLANG CFLAGS SAN OUT
if [ ${#todo[@]} -gt 0 ]; then
  printf '%s\n' "${todo[@]}" | xargs -P "$JOBS" -I{} bash -c 'compile {}'
fi
# shellcheck disable=SC2086
$CLANG $CFLAGS $SAN -fsanitize=fuzzer tests/fuzz/fuzz_ad.c "${objs[@]}" \
  $PKG_LIBS -lm -o "$OUT/fuzz_ad"
# shellcheck disable=SC2086
$CLANG $CFLAGS $SAN tests/fuzz/fuzz_ad.c tests/fuzz/replay_main.c \
  "${objs[@]}" $PKG_LIBS -lm -o "$OUT/fuzz_replay"
echo "built $OUT/fuzz_ad and $OUT/fuzz_replay"
