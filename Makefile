# darklight — `make run` starts darklight in front of the demo site; `make test` runs every test.

CARGO ?= cargo
CONFIG ?= config/darklight.yaml

.PHONY: all build run test lint fmt bench bench-load bench-features bench-instructions bench-profile soak deps test-deps browser check-config clean

all: build

# Pingora's zlib-ng build needs cmake: install it when missing (apt-get, else pip). The Redis
# store's tests need redis-server (apt-get).
APT_INSTALL = SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq

deps:
	@if ! command -v cmake >/dev/null 2>&1; then \
		echo "cmake not found: installing it"; \
		if command -v apt-get >/dev/null 2>&1; then \
			$(APT_INSTALL) cmake; \
		else \
			python3 -m pip install --quiet cmake; \
		fi; \
	fi
	@command -v cmake >/dev/null 2>&1 || { echo "cmake is still missing; install it and retry" >&2; exit 1; }

test-deps: deps
	@if ! command -v redis-server >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
		echo "redis-server not found: installing it"; \
		$(APT_INSTALL) redis-server; \
	fi
	@command -v redis-server >/dev/null 2>&1 || { echo "redis-server is missing; install it and retry" >&2; exit 1; }

# The status page test renders the page in headless Chromium: install Debian's `chromium` when
# missing (a large package). Without it that test is skipped with a message, unless
# DARKLIGHT_REQUIRE_CHROMIUM is set, as CI does.
browser:
	@if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
		echo "chromium not found: installing it for the status page test"; \
		if command -v apt-get >/dev/null 2>&1; then \
			SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
			{ $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
				|| echo "could not install chromium: the status page browser test will be skipped" >&2; \
		else \
			echo "no apt-get: install chromium to run the status page browser test" >&2; \
		fi; \
	fi

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
test: test-deps browser
	$(CARGO) test --all-targets
	$(CARGO) test --doc
	$(CARGO) test --no-default-features --lib --tests

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --no-default-features --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

# A long soak in release mode: SOAK_SECS of load, every request accounted for, memory flat.
SOAK_SECS ?= 300
soak: test-deps
	SOAK_SECS=$(SOAK_SECS) $(CARGO) test --release --test soak -- --nocapture

bench: deps
	$(CARGO) bench --bench classify --bench correlation --bench attribution --bench telemetry

# darklight vs plain Pingora vs nginx under wrk on 127.0.0.1 (DURATION, ROUNDS, SOAK… in the script).
bench-load: deps
	benches/load/compare.sh

# What each darklight feature costs a request: darklight with every feature, without each one,
# with none, and plain Pingora, in the same alternating rounds.
bench-features: deps
	TARGETS="darklight darklight-no-telemetry darklight-no-cookies darklight-no-correlation darklight-no-attribution darklight-off plain" \
		benches/load/compare.sh

# Instructions per request of darklight and plain Pingora under callgrind: exact, unlike timings.
bench-instructions: deps
	INSTRUCTIONS=1 DURATION=$${DURATION:-15} benches/load/compare.sh

# Where each proxy's CPU time goes per request, sampled with perf: kernel, own code, Pingora...
bench-profile: deps
	PROFILE=1 benches/load/compare.sh

clean:
	$(CARGO) clean

# Coverage-guided fuzzing of the pure core (fuzz/, a separate cargo-fuzz package), each target
# for FUZZ_SECONDS. cargo-fuzz passes nightly-only flags (-Zsanitizer=address); RUSTC_BOOTSTRAP
# lets the stable toolchain accept them. FUZZ_SANITIZER=none fuzzes without AddressSanitizer.
FUZZ_SECONDS ?= 60
FUZZ_SANITIZER ?= address
FUZZ_TARGETS ?= classify cookies config_yaml

.PHONY: fuzz
fuzz:
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@for target in $(FUZZ_TARGETS); do \
		echo "fuzzing $$target for $(FUZZ_SECONDS)s"; \
		mkdir -p fuzz/corpus/$$target; \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --sanitizer $(FUZZ_SANITIZER) $$target \
			fuzz/corpus/$$target fuzz/corpus-seeds/$$target \
			-- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done
