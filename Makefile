# Thin wrapper over CMake. `make run` and `make test` work on a fresh Debian 12
# machine as root: both install the missing packages first.
SHELL   := /bin/bash
JOBS    ?= $(shell nproc)
BUILD   ?= build
ASAN    ?= build-asan
TSAN    ?= build-tsan
FUZZB   ?= build-fuzz
FUZZ_SECONDS ?= 60
# of which the PROXY protocol fuzzer gets a third, 20 s at most (a small parser)
FUZZ_PP_SECONDS ?= $(shell s=$$(( $(FUZZ_SECONDS) / 3 )); [ $$s -gt 20 ] && s=20; \
                     [ $$s -lt 1 ] && s=1; echo $$s)
CMAKE_FLAGS ?=

.PHONY: all deps build test test-unit test-e2e test-tsan fuzz run bench format format-check clean

all: build

PKGLIST ?= deploy/packages.txt

deps:
	@missing=$$(grep -v '^\s*#' $(PKGLIST) | grep -v '^\s*$$' | \
	  while read -r p; do dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | \
	    grep -q 'install ok installed' || echo "$$p"; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

# Every test: the release build (what `make run` uses; -O2 warnings differ),
# unit and end-to-end suites under ASan+UBSan, the threaded suites under TSan,
# then the parser fuzzers for a bounded time.
test: deps
	$(MAKE) --no-print-directory build
	cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DLB_SANITIZE=address,undefined $(CMAKE_FLAGS) >/dev/null
	cmake --build $(ASAN) -j $(JOBS)
	cd $(ASAN) && ctest --output-on-failure -j $(JOBS)
	$(MAKE) --no-print-directory test-tsan
	$(MAKE) --no-print-directory fuzz

test-unit: deps
	cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DLB_SANITIZE=address,undefined >/dev/null
	cmake --build $(ASAN) -j $(JOBS)
	cd $(ASAN) && ctest --output-on-failure -j $(JOBS) -L unit

test-e2e: deps
	cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DLB_SANITIZE=address,undefined >/dev/null
	cmake --build $(ASAN) -j $(JOBS)
	cd $(ASAN) && ctest --output-on-failure -L e2e

test-tsan: deps
	cmake -S . -B $(TSAN) -DCMAKE_BUILD_TYPE=Debug -DLB_SANITIZE=thread >/dev/null
	cmake --build $(TSAN) -j $(JOBS)
	cd $(TSAN) && ctest --output-on-failure -L threaded

fuzz: deps
	CC=clang cmake -S . -B $(FUZZB) -DCMAKE_BUILD_TYPE=Debug -DLB_FUZZ=ON \
	  -DLB_SANITIZE=address,undefined -DLB_TESTS=OFF >/dev/null
	cmake --build $(FUZZB) -j $(JOBS) --target fuzz_http1 fuzz_proxyproto
	s=$$(( $(FUZZ_SECONDS) - $(FUZZ_PP_SECONDS) )); [ $$s -ge 1 ] || s=1; \
	  tests/fuzz/run.sh $(FUZZB)/fuzz_http1 $$s
	tests/fuzz/run.sh $(FUZZB)/fuzz_proxyproto $(FUZZ_PP_SECONDS) corpus-proxyproto

run: build
	tests/run-demo.sh $(BUILD)

bench: build
	@$(MAKE) --no-print-directory deps PKGLIST=deploy/packages-bench.txt
	tests/bench/bench.sh $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN) $(TSAN) $(FUZZB)
