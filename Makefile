# libad: automatic differentiation in C11.
#
#   make run        build and run the tour (installs dependencies if needed)
#   make test       build and run every test suite; ends "N passed, M failed"
#   make asan       the test suite under AddressSanitizer + UBSan
#   make valgrind   the test suite under valgrind (leaks and invalid access)
#   make tsan       the test suite under ThreadSanitizer
#   make bench      benchmarks, one line per figure
#   make check-derivatives  the derivative checker on an example
#   make digits     train a small CNN on the UCI digits
#   make fuzz       the differential fuzzer (make fuzz-ci: one minute)
#   make bench-compare  libad against PyTorch, libtorch and ADOL-C, and on
#                   ADBench; rewrites the results in docs/BENCHMARKS.md
#   make install    PREFIX=/usr/local DESTDIR= (headers, libad.a, libad.so,
#                   ad.pc)
#   make deps       install OpenBLAS, GSL, cmocka and pkg-config (Debian)

PREFIX ?= /usr/local
DESTDIR ?=
# gdb's data directory: gdb auto-loads $(GDB_DATADIR)/auto-load/<real path of
# libad.so>-gdb.py.  Debian's gdb uses /usr/share/gdb (see `gdb -batch -ex
# 'show data-directory'`); docs/debugging.md covers other prefixes.
GDB_DATADIR ?= $(PREFIX)/share/gdb
BUILD ?= build
CC ?= cc
SAN ?=
OPT ?= -O2

DEPS_PACKAGES = libopenblas-dev libgsl-dev libcmocka-dev pkg-config

# pkg-config is queried lazily (=) so that `make deps` can run first.
PKG_CFLAGS = $(shell pkg-config --cflags openblas gsl 2>/dev/null)
# GSL is linked against OpenBLAS's CBLAS, never against gslcblas.
PKG_LIBS = $(filter-out -lgslcblas,$(shell pkg-config --libs gsl 2>/dev/null)) \
           $(shell pkg-config --libs openblas 2>/dev/null)
CMOCKA_LIBS = $(shell pkg-config --libs cmocka 2>/dev/null)

WARN = -Wall -Wextra -Wpedantic -Wshadow -Werror
CFLAGS_ALL = -std=c11 $(OPT) -g $(WARN) -fPIC -pthread \
             -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc -Iautodiff \
             $(PKG_CFLAGS) $(SAN) $(CFLAGS)
LDLIBS_ALL = $(PKG_LIBS) -lm -pthread $(SAN) $(LDFLAGS)

LIB_DIRS = src autodiff nn optim
LIB_SRC = $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
LIB_OBJ = $(LIB_SRC:%.c=$(BUILD)/%.o)
HEADERS = $(wildcard include/*.h include/ad/*.h src/*.h autodiff/*.h nn/*.h \
                     optim/*.h)

TEST_SRC = $(wildcard tests/test_*.c)
TEST_BIN = $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_SUPPORT = $(filter-out $(TEST_SRC),$(wildcard tests/*.c))
TEST_SUPPORT_OBJ = $(TEST_SUPPORT:%.c=$(BUILD)/%.o)

EXAMPLE_SRC = $(wildcard examples/*.c)
EXAMPLE_BIN = $(EXAMPLE_SRC:examples/%.c=$(BUILD)/examples/%)
BENCH_SRC = $(wildcard bench/bench_*.c)
BENCH_BIN = $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

STATIC_LIB = $(BUILD)/libad.a
SHARED_LIB = $(BUILD)/libad.so

.SECONDARY:

.PHONY: all deps check-deps lib test test-run run bench asan valgrind tsan \
        install clean examples check-derivatives digits bench-compare \
        fuzz fuzz-ci debugpool

all: check-deps lib examples

lib: $(STATIC_LIB) $(SHARED_LIB)

# Dependencies: present, installed through apt-get, or the exact command.
check-deps:
	@bash tools/deps.sh check $(DEPS_PACKAGES)

deps:
	@bash tools/deps.sh install $(DEPS_PACKAGES)

# Every object waits for the dependency check, so that `make -j` never
# compiles against headers that are still being installed.
$(BUILD)/%.o: %.c $(HEADERS) | check-deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(FILE_CFLAGS) -c $< -o $@

# The optimizers' update loops run over every parameter each step: let them
# vectorize, square roots included (nothing there reads errno).
$(BUILD)/optim/optimizers.o: FILE_CFLAGS = -ftree-vectorize -fno-math-errno

$(STATIC_LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(SHARED_LIB): $(LIB_OBJ)
	$(CC) -shared -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/tests/%: tests/%.c $(TEST_SUPPORT_OBJ) $(STATIC_LIB) $(HEADERS) \
                  tests/testutil.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests $< $(TEST_SUPPORT_OBJ) $(STATIC_LIB) \
	    $(CMOCKA_LIBS) $(LDLIBS_ALL) -o $@

$(BUILD)/examples/%: examples/%.c $(STATIC_LIB) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< $(STATIC_LIB) $(LDLIBS_ALL) -o $@

$(BUILD)/bench/%: bench/%.c $(STATIC_LIB) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Ibench $< $(STATIC_LIB) $(LDLIBS_ALL) -o $@

examples: $(EXAMPLE_BIN)

# Suites and benchmarks that include example programs (to test and time
# the examples themselves) are rebuilt when those change.
$(BUILD)/tests/test_gsl $(BUILD)/bench/bench_gsl: $(wildcard examples/gsl_*.c)
$(BUILD)/tests/test_optim: examples/optimizers.c

# tests/gdb_test.sh drives gdb over build/examples/debug_demo and counts in
# the summed line; the sanitizer and valgrind runs leave it out (GDB_TEST=).
GDB_TEST ?= tests/gdb_test.sh
GDB_TEST_DEPS = $(if $(GDB_TEST),$(BUILD)/examples/debug_demo $(SHARED_LIB))

# The test runner sums every suite into one "N passed, M failed" line.
# RUNNER wraps each test binary (valgrind, for instance).
RUNNER ?=
test: check-deps
	@$(MAKE) --no-print-directory test-run

test-run: $(TEST_BIN) $(GDB_TEST_DEPS)
	@AD_BUILD=$(BUILD) bash tests/run_tests.sh "$(RUNNER)" $(TEST_BIN) $(GDB_TEST)

run: check-deps $(BUILD)/examples/tour $(BUILD)/examples/digits
	@$(BUILD)/examples/tour
	@echo
	@echo "== A small CNN on the UCI digits, 3 epochs (make digits trains 15) =="
	@$(BUILD)/examples/digits --short

# Train the digits CNN (examples/digits.c); ends "test accuracy: 0.xxxx".
digits: check-deps $(BUILD)/examples/digits
	@$(BUILD)/examples/digits

# The differential fuzzer (clang + libFuzzer, tests/fuzz/README.md): make
# fuzz runs for FUZZ_SECONDS (an hour by default), make fuzz-ci a fixed
# reproducible minute.
FUZZ_SECONDS ?= 3600
fuzz:
	@bash tests/fuzz/build.sh && bash tests/fuzz/run.sh $(FUZZ_SECONDS)

# CI's run is reproducible: a fixed seed and number of programs (about a
# minute), so that it judges the change, not the luck of the draw.
fuzz-ci:
	@bash tests/fuzz/build.sh && \
	    FUZZ_SEED=1 FUZZ_RUNS=15000 bash tests/fuzz/run.sh 120

# The derivative checker on a user function, and a wrong gradient caught.
check-derivatives: check-deps $(BUILD)/examples/check_derivatives
	@$(BUILD)/examples/check_derivatives

bench: check-deps $(BENCH_BIN)
	@bash bench/run_bench.sh $(BUILD)

# libad against PyTorch, libtorch and ADOL-C (those installed) and on
# ADBench's GMM, LSTM and BA; rewrites the results in docs/BENCHMARKS.md.
bench-compare: check-deps $(STATIC_LIB)
	@bash bench/compare/run.sh $(BUILD)

# tests/test_adbench.c includes the ADBench objectives in bench/adbench/.
$(BUILD)/tests/test_adbench: $(wildcard bench/adbench/*.h)

SAN_ASAN = -fsanitize=address,undefined -fno-omit-frame-pointer \
           -fno-sanitize-recover=all
asan: check-deps
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	$(MAKE) --no-print-directory BUILD=build/asan OPT=-O1 \
	    SAN="$(SAN_ASAN)" GDB_TEST= test-run

VALGRIND = valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
           --show-leak-kinds=definite,indirect --error-exitcode=99
valgrind: check-deps
	@OPENBLAS_NUM_THREADS=1 AD_TEST_QUICK=1 \
	$(MAKE) --no-print-directory BUILD=build/valgrind RUNNER="$(VALGRIND)" \
	    GDB_TEST= test-run

tsan: check-deps
	@TSAN_OPTIONS=halt_on_error=1 OPENBLAS_NUM_THREADS=1 \
	$(MAKE) --no-print-directory BUILD=build/tsan OPT=-O1 \
	    SAN="-fsanitize=thread -DAD_VMATH_NO_CLONES" GDB_TEST= test-run

# The suite with -DAD_DEBUG_POOL: released tensor headers are poisoned and
# quarantined, and tensor arguments checked (docs/RELIABILITY.md).
debugpool: check-deps
	@$(MAKE) --no-print-directory BUILD=build/debugpool \
	    CFLAGS="$(CFLAGS) -DAD_DEBUG_POOL" GDB_TEST= test-run

install: lib
	install -d $(DESTDIR)$(PREFIX)/include/ad $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/ad.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 include/ad/*.h $(DESTDIR)$(PREFIX)/include/ad/
	install -m 644 $(STATIC_LIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SHARED_LIB) $(DESTDIR)$(PREFIX)/lib/
	sed -e 's|@PREFIX@|$(PREFIX)|' ad.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/ad.pc
	install -d $(DESTDIR)$(PREFIX)/share/libad \
	    $(DESTDIR)$(GDB_DATADIR)/auto-load$(PREFIX)/lib
	install -m 644 gdb/libad-gdb.py $(DESTDIR)$(PREFIX)/share/libad/
	install -m 644 gdb/libad-gdb.py \
	    $(DESTDIR)$(GDB_DATADIR)/auto-load$(PREFIX)/lib/libad.so-gdb.py

clean:
	rm -rf build
