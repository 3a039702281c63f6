# The two commands a new user runs:
#   make demo   install dependencies, build, run the main job (the SPE kernel report)
#   make test   install dependencies, build, run the whole test suite
BUILD_DIR ?= build
JOBS ?= 2
DEMO_DIR ?= out

FUZZ_SECONDS ?= 60

.PHONY: all setup configure build test demo fuzz clean

all: build

setup:
	bash scripts/setup.sh

configure: setup
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

demo: build
	bash scripts/demo.sh $(BUILD_DIR)/spe $(DEMO_DIR)

# Each libFuzzer target (clang, ASan, UBSan) for FUZZ_SECONDS on its corpus; see docs/FUZZING.md.
fuzz: build
	bash fuzz/run.sh $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD_DIR)
