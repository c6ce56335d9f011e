# darklight — `make run` starts darklight in front of the demo site; `make test` runs every test.

CARGO ?= cargo
CONFIG ?= config/darklight.yaml

.PHONY: all build run test test-core lint fmt bench bench-load deps check-config clean

all: build

# Pingora's zlib-ng build needs cmake: install it when missing (apt-get, else pip).
deps:
	@if ! command -v cmake >/dev/null 2>&1; then \
		echo "cmake not found: installing it"; \
		if command -v apt-get >/dev/null 2>&1; then \
			SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
			$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq cmake; \
		else \
			python3 -m pip install --quiet cmake; \
		fi; \
	fi
	@command -v cmake >/dev/null 2>&1 || { echo "cmake is still missing; install it and retry" >&2; exit 1; }

build: deps
	$(CARGO) build --release

# Cookies need a signing secret; for the demo a random one per run is enough (cookies from an
# earlier run are then ignored and replaced). In production set DARKLIGHT_COOKIE_SECRET.
run: deps
	DARKLIGHT_COOKIE_SECRET="$${DARKLIGHT_COOKIE_SECRET:-$$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}" \
		$(CARGO) run --release -- run --config $(CONFIG)

check-config: deps
	$(CARGO) run --release -- check --config $(CONFIG)

# The whole suite, then the pure core alone without Pingora, OpenTelemetry or the CLI.
test: deps
	$(CARGO) test --all-targets
	$(CARGO) test --doc
	$(CARGO) test --no-default-features --lib --tests

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --no-default-features --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

bench: deps
	$(CARGO) bench --bench classify --bench correlation --bench attribution --bench telemetry

# darklight vs plain Pingora vs nginx under wrk on 127.0.0.1 (DURATION, ROUNDS, SOAK… in the script).
bench-load: deps
	benches/load/compare.sh

clean:
	$(CARGO) clean
