# carpio — the two promised commands are `make demo` and `make test` (as root, fresh machine).
CARGO ?= cargo
RELEASE_BIN := target/release

.PHONY: all deps build test lint unit demo bench bench-l4 bench-lab bench-relay clean fmt
.PHONY: fuzz fuzz-smoke

all: build

deps:
	@bash scripts/deps.sh all

build: deps bpf
	$(CARGO) build --release --bins

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings

# Unit, golden, fixture, simulation and corpus tests (no root needed), then lint.
unit: deps bpf
	$(CARGO) test --release --all-targets --no-fail-fast

test: unit lint

# Fuzzing (issue 11, README "Hardening"). `make fuzz` runs each cargo-fuzz target for FUZZ_SECS
# seconds (default 60) on stable rustc; `make fuzz-smoke` (part of `unit`, so of `make test`)
# runs the same target bodies over the seed corpus and bounded mutations of it.
FUZZ_SECS ?= 60
fuzz: deps
	FUZZ_SECS=$(FUZZ_SECS) bash scripts/fuzz.sh
fuzz-smoke: deps
	$(CARGO) test --release --test fuzz_smoke

fmt:
	$(CARGO) fmt --all

demo: build
	@bash scripts/demo.sh

bench: deps
	$(CARGO) bench

# `carpio bench`: every scenario against carpio and its peers in a netns lab (root; README
# "Performance"): results.json, results.md and SVG plots in target/bench/.
BENCH_ARGS ?=
bench-lab: build
	$(RELEASE_BIN)/carpio bench -o target/bench $(BENCH_ARGS)

# Its L4 part (UDP, DNS, NTP: carpio vs nftables DNAT and dnsdist) and its TCP part (relay vs
# HAProxy).
bench-l4: build
	@bash scripts/bench-l4.sh $(BENCH_ARGS)

bench-relay: build
	@bash scripts/bench-relay.sh $(BENCH_ARGS)

clean:
	$(CARGO) clean

# --- bpf (sys) -------------------------------------------------------------------------------
# The XDP program, built outside cargo so `cargo build` never needs clang. The daemon loads the
# object from a path; tests find it at target/bpf/carpio_xdp.o and run `make bpf` if missing.
BPF_CLANG ?= clang
BPF_CFLAGS := -O2 -g -Wall -Werror -target bpf -I/usr/include/x86_64-linux-gnu -Ibpf
BPF_OBJ := target/bpf/carpio_xdp.o
.PHONY: bpf
bpf: $(BPF_OBJ)
$(BPF_OBJ): bpf/carpio_xdp.c bpf/abi.h
	@mkdir -p $(dir $@)
	$(BPF_CLANG) $(BPF_CFLAGS) -c $< -o $@
# --- end bpf ---------------------------------------------------------------------------------
