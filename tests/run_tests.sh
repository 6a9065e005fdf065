#!/usr/bin/env bash
# Runs each cmocka suite (optionally under a wrapper such as valgrind) and
# sums the results into one closing line: "N passed, M failed".
set -u
runner=$1; shift
passed=0; failed=0; status=0
for bin in "$@"; do
  name=$(basename "$bin")
  case $bin in
    # Scripts (tests/gdb_test.sh) drive tools themselves: no wrapper.
    *.sh) out=$(bash "$bin" 2>&1); rc=$? ;;
    *) out=$(CMOCKA_MESSAGE_OUTPUT=stdout $runner "$bin" 2>&1); rc=$? ;;
  esac
  # Show only what went wrong: cmocka's failure details and sanitizer or
  # valgrind reports.
  printf '%s\n' "$out" | grep -E '^\[ +(FAILED|ERROR|LINE|SKIPPED) +\]|^\[(values|first order|adjoint|second order|third order)\]|==[0-9]+==|runtime error|Sanitizer' \
    | head -40
  p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
  f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
  # cmocka's closing " N FAILED TEST(S)" also counts setup/teardown
  # errors, which the "[  FAILED  ]" line leaves out.
  ft=$(printf '%s\n' "$out" | sed -n 's/^ *\([0-9]*\) FAILED TEST(S).*/\1/p' | tail -1)
  p=${p:-0}; f=${f:-0}
  if [ -n "$ft" ] && [ "$ft" -gt "$f" ]; then f=$ft; fi
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    # A crash, a sanitizer report or a leak: the suite counts as failed.
    echo "$name: exited with status $rc"
    printf '%s\n' "$out" | tail -30
    f=1
  fi
  printf '%-28s %4d passed, %d failed\n' "$name" "$p" "$f"
  passed=$((passed + p)); failed=$((failed + f))
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
