# carpio — the two promised commands are `make demo` and `make test` (as root, fresh machine).
CARGO ?= cargo
RELEASE_BIN := target/release

.PHONY: all deps build test lint unit demo bench clean fmt

all: build

deps:
	@bash scripts/deps.sh all

build: deps
	$(CARGO) build --release --bins

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings

# Unit, golden, fixture, simulation and corpus tests (no root needed), then lint.
unit: deps
	$(CARGO) test --release --all-targets

test: unit lint

fmt:
	$(CARGO) fmt --all

demo: build
	@bash scripts/demo.sh

bench: deps
	$(CARGO) bench

clean:
	$(CARGO) clean
