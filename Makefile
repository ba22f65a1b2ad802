# Every target does its own set-up on a fresh Debian 12 machine.
CARGO ?= cargo
GUEST := target/guest
HOSTEL := target/release/hostel

.PHONY: all deps guest build run run-vm test lint bench-boot bench-api

all: build

deps:
	@scripts/install-deps.sh

guest: deps
	@guest/build.sh $(GUEST)

build: deps
	$(CARGO) build --release --workspace

# Starts the daemon on http://127.0.0.1:7878 with its state in ./state; prints the operator token.
run: guest build
	@mkdir -p state
	$(HOSTEL) daemon --state-dir $(CURDIR)/state --guest-dir $(CURDIR)/$(GUEST) --print-operator-token

# One VM in the foreground, console on this terminal (Ctrl-] stops it); no daemon needed.
run-vm: guest build
	$(HOSTEL) run --kernel $(GUEST)/vmlinux --initrd $(GUEST)/initrd.img --memory 256M --cmdline quiet

# Unit and integration tests, real guests included (at most two booting at once).
test: guest
	$(CARGO) build --workspace --all-targets
	HOSTEL_REQUIRE_GUEST=1 HOSTEL_GUEST_DIR=$(CURDIR)/$(GUEST) $(CARGO) test --workspace -- --test-threads=2

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Boot time and memory: hostel run vs a plain QEMU command, alternating (not in `make test`).
bench-boot: guest build
	$(CARGO) run --release -p hostel-bench --bin bench-boot -- --hostel $(HOSTEL) --guest $(GUEST) --runs 10 --markdown BENCHMARKS.md

# API create+start vs hostel run, a burst of 20 starts, list/show with 1,000 VMs (not in `make test`).
bench-api: guest build
	$(CARGO) run --release -p hostel-bench --bin bench-api -- --hostel $(HOSTEL) --guest $(GUEST) --markdown BENCHMARKS.md
