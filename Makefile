# The two commands a new user runs:
#   make demo   install dependencies, build, run the main job (the SPE kernel report)
#   make test   install dependencies, build, run the whole test suite
BUILD_DIR ?= build
JOBS ?= 2
DEMO_DIR ?= out
PREFIX ?= /usr/local

FUZZ_SECONDS ?= 60
SANITIZE_DIR ?= build-sanitize
# Sanitizer reports stop the test that caused them (UBSan too), with a stack; leaks of LibTorch's
# own are suppressed in tests/sanitize/lsan.supp (each with its reason).
SANITIZER_ENV = ASAN_OPTIONS=detect_stack_use_after_return=1:strict_init_order=1:abort_on_error=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitize/lsan.supp:print_suppressions=0

.PHONY: all setup configure build test test-sanitize demo fuzz install clean

all: build

setup:
	bash scripts/setup.sh

configure: setup
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

# libspe, its headers and CMake/pkg-config package, the CLI, the ops for Python, configs, docs.
install: build
	cmake --install $(BUILD_DIR) --prefix $(PREFIX)

# The whole suite again, our code built with AddressSanitizer and UndefinedBehaviorSanitizer.
test-sanitize: setup
	cmake -S . -B $(SANITIZE_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPE_SANITIZE=ON -DSPE_BUILD_BENCHMARKS=OFF
	cmake --build $(SANITIZE_DIR) -j $(JOBS)
	cd $(SANITIZE_DIR) && $(SANITIZER_ENV) ctest --output-on-failure -j $(JOBS)

demo: build
	bash scripts/demo.sh $(BUILD_DIR)/spe $(DEMO_DIR)

# Each libFuzzer target (clang, ASan, UBSan) for FUZZ_SECONDS on its corpus; see docs/FUZZING.md.
fuzz: build
	bash fuzz/run.sh $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD_DIR) $(SANITIZE_DIR)
