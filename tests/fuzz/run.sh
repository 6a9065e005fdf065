#!/usr/bin/env bash
# Builds the libFuzzer target (tests/fuzz/build.sh) and runs it on the seed
# corpus (tests/fuzz/corpus, read-only) plus a working corpus under the
# build directory that keeps what earlier runs found.
#
#   tests/fuzz/run.sh [SECONDS]      default 60 (the CI run); 0: no limit
#   FUZZ_JOBS=N tests/fuzz/run.sh    N processes in parallel (long runs)
#
# Exit status 0 when nothing was found.  A finding (crash, sanitizer
# report, leak, timeout, or a check of fuzz_ad.c failing) is saved as
# build/fuzz/artifacts/crash-* (or leak-*, timeout-*); replay it with
#   build/fuzz/fuzz_replay build/fuzz/artifacts/crash-...
# which prints the program and the failed check.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
out=${FUZZ_BUILD:-build/fuzz}
bash tests/fuzz/build.sh >/dev/null
mkdir -p "$out/corpus" "$out/artifacts"

# Huge requests (an empty tensor with huge axes reduced over its empty
# axis) must fail as AD_ENOMEM, not abort in the sanitizer's allocator.
export ASAN_OPTIONS=${ASAN_OPTIONS:-allocator_may_return_null=1:max_allocation_size_mb=2048:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OPENBLAS_NUM_THREADS=1
export AD_FUZZ_STATS=1

args=(-max_len=512 -timeout=30 -rss_limit_mb=2560 -print_final_stats=1
      -artifact_prefix="$out/artifacts/")
if [ "$seconds" -gt 0 ]; then args+=(-max_total_time="$seconds"); fi
# A fixed seed and run count make a run reproducible (CI uses them).
if [ -n "${FUZZ_SEED:-}" ]; then args+=(-seed="$FUZZ_SEED"); fi
if [ -n "${FUZZ_RUNS:-}" ]; then args+=(-runs="$FUZZ_RUNS"); fi
jobs=${FUZZ_JOBS:-1}
if [ "$jobs" -gt 1 ]; then args+=(-fork="$jobs" -ignore_crashes=0); fi

echo "fuzz: $out/fuzz_ad for ${seconds}s (0 = no limit), $jobs job(s)"
set +e
"$out/fuzz_ad" "${args[@]}" "$out/corpus" tests/fuzz/corpus >"$out/fuzz.log" 2>&1
rc=$?
set -e
# The summary: libFuzzer's final figures, fuzz_ad's counts, any finding.
grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)|^fuzz_ad:|ERROR|SUMMARY|runtime error|Test unit written|^  ' \
  "$out/fuzz.log" | head -60
if [ "$rc" -ne 0 ]; then
  echo "fuzz: FAILED (status $rc); full log in $out/fuzz.log"
  exit "$rc"
fi
echo "fuzz: passed"
