#!/usr/bin/env bash
# Drives gdb in batch mode on examples/debug_demo and checks what libad's
# pretty-printers (gdb/libad-gdb.py) print; reports in cmocka's format.
#
#   bash tests/gdb_test.sh [BUILD_DIR]      the test (BUILD_DIR: build)
#   bash tests/gdb_test.sh --transcript     the session of docs/debugging.md
#
# BUILD_DIR (or $AD_BUILD) holds examples/debug_demo and libad.so.  Without
# gdb, or with a gdb that has no Python, the test is skipped with a message
# and counts as 0 passed, 0 failed.
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
script="$root/gdb/libad-gdb.py"
transcript=0
if [ "${1:-}" = "--transcript" ]; then
  transcript=1
  shift
fi
build=${1:-${AD_BUILD:-build}}
case $build in /*) ;; *) build="$root/$build" ;; esac
demo="$build/examples/debug_demo"
# The line of the demo gdb stops at, found by its comment so that editing
# the demo does not break the test.
line=$(grep -n 'inspect here' "$root/examples/debug_demo.c" | cut -d: -f1)

passed=0
failed=0
failures=()

report() {
  echo "[==========] $((passed + failed)) test(s) run."
  echo "[  PASSED  ] $passed test(s)."
  if [ "$failed" -gt 0 ]; then
    echo "[  FAILED  ] $failed test(s), listed below:"
    for name in "${failures[@]}"; do echo "[  FAILED  ] $name"; done
    exit 1
  fi
  exit 0
}

skip_all() {
  echo "[  SKIPPED ] gdb_test: $1"
  report
}

if ! command -v gdb >/dev/null 2>&1; then
  skip_all "gdb is not installed; the pretty-printers were not tested"
fi
if ! gdb -nx -batch -ex 'python print("py-ok")' 2>/dev/null |
     grep -q py-ok; then
  skip_all "this gdb has no Python; the pretty-printers were not tested"
fi
if [ ! -x "$demo" ]; then
  echo "[  ERROR   ] gdb_test: $demo is missing (make examples)"
  failed=1
  failures+=("build")
  report
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# gdb without the user's ~/.gdbinit, without paging or line wrapping, and
# without reaching out to debuginfod servers.
GDB=(gdb -nx -batch -iex 'set debuginfod enabled off' -iex 'set pagination off'
     -iex 'set width 0' -iex 'set confirm off')
export OPENBLAS_NUM_THREADS=1
unset AD_DEBUG

if [ "$transcript" -eq 1 ]; then
  # The session shown in docs/debugging.md: gdb echoes each command as
  # "+command" (trace-commands), shown here as the prompt "(gdb) command".
  "${GDB[@]}" -ex 'set trace-commands on' -ex "source $script" \
    -ex "break debug_demo.c:$line" -ex run \
    -ex 'print t' -ex 'print tt' -ex 'print big' -ex 'print odd' \
    -ex 'print w' -ex 'print tape' -ex 'print outer' -ex 'print inner' \
    -ex 'print ad__contexts' \
    -ex 'break ad__error' -ex continue -ex bt -ex finish \
    -ex 'print $ad_error()' -ex 'frame function main' -ex 'print t' \
    -ex 'call ad_summary(big)' -ex continue \
    --args "$demo" 2>&1 |
    sed -e 's/^+/(gdb) /' -e "s|$root/||g"
  exit 0
fi

# ---------------------------------------------------------------------------
# One gdb session over the demo; every check below reads its output.
# ---------------------------------------------------------------------------

# One -ex per command: unlike a command file, a failing command does not
# cancel the ones after it, so one broken printer fails one check only.
session=(
  "source $script"
  "break debug_demo.c:$line"
  "run > $tmp/stdout.txt"
  'echo @@t\n' 'print t'
  'echo @@tt\n' 'print tt'
  'echo @@big\n' 'print big'
  'echo @@odd\n' 'print odd'
  'echo @@f\n' 'print f'
  'echo @@star\n' 'print *t'
  'echo @@raw\n' 'print/r t'
  'echo @@w\n' 'print w'
  'echo @@tape\n' 'print tape'
  'echo @@outer\n' 'print outer'
  'echo @@inner\n' 'print inner'
  'echo @@contexts\n' 'print ad__contexts'
  'echo @@edge\n'
  'set ad-print-edgeitems 1' 'set ad-print-threshold 5' 'print t'
  'set ad-print-edgeitems 3' 'set ad-print-threshold 1000'
  'echo @@frame\n' 'tbreak ad_matmul' 'continue'
  'echo @@error\n' 'delete' 'break ad__error' 'continue' 'bt' 'finish'
  'print $ad_error()'
  'echo @@summary\n' 'frame function main' 'call ad_print(big)'
  'call ad_summary(odd)'
  'echo @@end\n' 'continue'
)
# Functions are called from gdb at the last stop only: gdb 13 can leave
# the return breakpoint of such a call planted on the stack, where every
# later resume writes an int3 byte; once a deeper stop makes that address
# live (a saved register), the program crashes.  At the last stop the
# address lies below the stack pointer, in memory nothing reads.
args=()
for c in "${session[@]}"; do args+=(-ex "$c"); done
"${GDB[@]}" "${args[@]}" --args "$demo" > "$tmp/gdb.txt" 2>&1

# The text gdb printed between the markers @@name and the next marker.
section() {
  awk -v want="@@$1" '/^@@/ { on = ($0 == want); next } on' "$tmp/gdb.txt"
}

check() {
  local name=$1
  shift
  if "$@"; then
    echo "[       OK ] $name"
    passed=$((passed + 1))
  else
    echo "[  FAILED  ] $name"
    failed=$((failed + 1))
    failures+=("$name")
  fi
}

# contains SECTION TEXT: the section holds TEXT (several lines allowed).
contains() {
  local got
  got=$(section "$1")
  if [[ "$got" != *"$2"* ]]; then
    echo "[  LINE    ] --- expected in '$1':"
    printf '%s\n' "$2"
    echo "[  LINE    ] --- got:"
    printf '%s\n' "$got" | head -30
    return 1
  fi
}

check tensor_matrix contains t "shape=(2, 3) strides=(3, 1) contiguous refs=2 \
storage-refs=2 = {
[[1 2 3]
 [4 5 6]]
}"
check tensor_pointer_prefix contains t '$1 = (ad_tensor *) 0x'
check tensor_transposed_view contains tt "shape=(3, 2) strides=(1, 3) strided \
view refs=1 storage-refs=2 = {
[[1 4]
 [2 5]
 [3 6]]
}"
check tensor_nan_inf contains odd "[ 1.5    nan   inf -2.25]"
check tensor_scalar contains f "shape=() strides=() contiguous refs=1 = {
0.95885108
}"
check tensor_struct contains star "= ad_tensor shape=(2, 3) strides=(3, 1)"
raw_is_plain() {
  local got
  got=$(section raw)
  [[ "$got" == *"(ad_tensor * volatile) 0x"* && "$got" != *shape=* ]]
}
check raw_print_bypasses_printer raw_is_plain

big_is_elided() {
  local got
  got=$(section big)
  local header="shape=(100, 100) strides=(100, 1) contiguous refs=1 = {"
  [[ "$got" == *"$header"* ]] &&
    [[ "$got" == *$'\n ...\n'* ]] &&
    [ "$(printf '%s\n' "$got" | grep -c '\.\.\.')" -eq 7 ]
}
check tensor_large_elided big_is_elided

# The printer's values are exactly what ad_print wrote for the same tensor
# (the demo's stdout went to a file: ad_print's text, then " shape=...").
same_as_ad_print() {
  local from_gdb from_c
  from_gdb=$(section big | sed -n '/= {$/,/^}$/p' | sed '1d;$d')
  from_c=$(awk '/^\[\[/ { text = "" } { text = text $0 "\n" }
                / shape=\(100, 100\)$/ { printf "%s", text; exit }' \
             "$tmp/stdout.txt" | sed 's/ shape=(100, 100)$//')
  [ -n "$from_gdb" ] && [ "$from_gdb" = "$from_c" ]
}
check tensor_matches_ad_print same_as_ad_print

check variable_name_and_value contains w \
  "\"weights\" refs=2 value: shape=(3,) strides=(1,) contiguous"
check variable_values contains w "[0.5 0.5 0.5]"
check tape_nodes_and_state contains tape "3 nodes, recording, persistent, \
variables: \"weights\", context 1 of 3 on this thread"
check forward_outer_level contains outer \
  "level 1 of 2 (context 2 of 3 on this thread), 3 tangents"
check forward_inner_level contains inner \
  "level 2 of 2 (context 3 of 3 on this thread)"
check context_stack contains contexts "3 open contexts, 3 active = {[0] = tape"
check print_settings contains edge "[[1 ... 3]
 [4 ... 6]]"

summary_call() {
  grep -q '^  min=-2.25 max=1.5 mean=-0.375 nan=1 +inf=1 -inf=0$' \
    "$tmp/stdout.txt" &&
    [ "$(grep -c '^ad_tensor shape=(4,) numel=4 contiguous$' \
         "$tmp/stdout.txt")" -eq 2 ]
}
# gdb 13 cannot call into the program on some kernels and CPUs ("Couldn't
# write extended state status"): that is gdb's limitation, reported as a
# skip; the printers and $ad_error() need no calls.
if section summary | grep -q "Couldn't write extended state"; then
  echo "[  SKIPPED ] call_ad_summary: this gdb cannot call functions here:"
  section summary | grep -m1 "Couldn't"
else
  check call_ad_summary summary_call
fi

# In frame lines and backtraces the values are elided to {...}.
check frame_args_elided contains frame "ad_matmul (a=(ad_tensor *) 0x"
check frame_args_short contains frame "= {...}"

check break_ad__error contains error "Breakpoint 3, ad__error (code="
check error_backtrace contains error "in ad_matmul"
check error_message contains error \
  '"AD_ESHAPE: ad_matmul: inner dimensions differ: (2, 3) x (2, 3)"'
check program_finishes contains end "exited normally"

# ---------------------------------------------------------------------------
# AD_DEBUG=abort under gdb: the first error stops the program with SIGABRT
# inside ad__error, the message already on stderr.
# ---------------------------------------------------------------------------

AD_DEBUG=abort "${GDB[@]}" -ex run -ex bt --args "$demo" \
  > "$tmp/abort.txt" 2>&1
abort_stops() {
  local msg="libad: AD_DEBUG=abort: AD_ESHAPE: ad_matmul: inner dimensions"
  grep -qF "$msg differ: (2, 3) x (2, 3)" "$tmp/abort.txt" &&
    grep -q 'received signal SIGABRT' "$tmp/abort.txt" &&
    grep -q 'in ad__error (code=' "$tmp/abort.txt"
}
check ad_debug_abort_under_gdb abort_stops

# ---------------------------------------------------------------------------
# Auto-loading: `make install` puts the script at
# $(PREFIX)/share/gdb/auto-load$(PREFIX)/lib/libad.so-gdb.py.  Mimic that
# tree with a program linked against libad.so and check that gdb loads the
# printers without any `source`.
# ---------------------------------------------------------------------------

autoload() {
  local lib="$tmp/prefix/lib" auto="$tmp/prefix/share/gdb/auto-load"
  [ -f "$build/libad.so" ] || { echo "no $build/libad.so"; return 1; }
  mkdir -p "$lib" "$auto$lib" || return 1
  cp "$build/libad.so" "$lib/" || return 1
  cp "$script" "$auto$lib/libad.so-gdb.py" || return 1
  ${CC:-cc} -std=c11 -g -O0 -I"$root/include" "$root/examples/debug_demo.c" \
    -L"$lib" -lad -Wl,-rpath,"$lib" -lm -o "$tmp/demo_shared" \
    > "$tmp/cc.txt" 2>&1 || { cat "$tmp/cc.txt"; return 1; }
  "${GDB[@]}" -iex "set auto-load scripts-directory $auto" \
    -iex "set auto-load safe-path $auto" \
    -ex "break debug_demo.c:$line" -ex run -ex 'print t' \
    -ex 'info auto-load python-scripts' --args "$tmp/demo_shared" \
    > "$tmp/autoload.txt" 2>&1
  grep -q 'shape=(2, 3) strides=(3, 1) contiguous' "$tmp/autoload.txt" &&
    grep -q "^Yes .*libad.so-gdb.py" "$tmp/autoload.txt" ||
    { tail -20 "$tmp/autoload.txt"; return 1; }
}
check auto_load_with_libad_so autoload

report
