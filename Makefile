# Every target does its own set-up on a fresh Debian 12 machine.
CARGO ?= cargo
GUEST := target/guest
HOSTEL := target/release/hostel

.PHONY: all deps guest build run run-vm api-venv suricata test lint fuzz bench-boot bench-api bench-net bench-images bench-firewall bench-tls bench-ids bench-storage bench-scan bench-vps bench-exec bench-ids-inline

all: build

deps:
	@scripts/install-deps.sh

guest: deps
	@guest/build.sh $(GUEST)

build: deps
	$(CARGO) build --release --workspace

# Starts the daemon on https://127.0.0.1:7878 with its state in ./state; prints the operator
# token and the certificate's fingerprint.
run: guest build
	@mkdir -p state
	$(HOSTEL) daemon --state-dir $(CURDIR)/state --guest-dir $(CURDIR)/$(GUEST) --print-operator-token

# One VM in the foreground, console on this terminal (Ctrl-] stops it); no daemon needed.
run-vm: guest build
	$(HOSTEL) run --kernel $(GUEST)/vmlinux --initrd $(GUEST)/initrd.img --memory 256M --cmdline quiet

# schemathesis (pinned) in target/venv for the API conformance test; without PyPI that test
# reports itself skipped.
api-venv: deps
	@scripts/api-venv.sh target/venv || echo "api-venv: no schemathesis; its test will be skipped" >&2

# Suricata 7 (bookworm-backports) for the tests comparing hostel-ids with it
# (crates/hostel-ids/tests/replay.rs, suricata_keywords.rs) and bench-ids; backports are among
# apt's sources only during that install. Without it those tests report themselves skipped.
suricata:
	@scripts/install-suricata.sh || echo "suricata: not installed; the Suricata comparisons will be skipped" >&2

# Unit and integration tests, real guests included (at most two booting at once), and a
# bounded schemathesis run against the API (crates/hostel/tests/api_schemathesis.rs).
test: guest api-venv suricata
	$(CARGO) build --workspace --all-targets
	HOSTEL_REQUIRE_GUEST=1 HOSTEL_GUEST_DIR=$(CURDIR)/$(GUEST) $(CARGO) test --workspace -- --test-threads=2

# The cargo-fuzz targets (fuzz/) for FUZZ_SECONDS each, built with libFuzzer's coverage
# instrumentation on the stable toolchain (the flags cargo-fuzz passes, minus the sanitizer,
# which needs nightly). Any crash fails the target and leaves its input in target/fuzz-corpus.
FUZZ_SECONDS ?= 30
FUZZ_FLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks
FUZZ_BIN := target/fuzz/x86_64-unknown-linux-gnu/release
fuzz:
	RUSTFLAGS="$(FUZZ_FLAGS)" CARGO_TARGET_DIR=target/fuzz $(CARGO) build --release \
	  --target x86_64-unknown-linux-gnu --manifest-path fuzz/Cargo.toml
	@for t in frame_parser descriptor_chain vhost_message external_frame firewall_verdict blk_request ids_rules ids_packets scan_sigs qga_reply; do \
	  mkdir -p target/fuzz-corpus/$$t; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  if ! $(FUZZ_BIN)/$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	      -artifact_prefix=target/fuzz-corpus/$$t- target/fuzz-corpus/$$t > target/fuzz-$$t.log 2>&1; then \
	    tail -40 target/fuzz-$$t.log; exit 1; \
	  fi; \
	  grep -E "^(Done|stat::number_of_executed_units)" target/fuzz-$$t.log; \
	done

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Boot time and memory: hostel run vs a plain QEMU command, alternating (not in `make test`).
bench-boot: guest build
	$(CARGO) run --release -p hostel-bench --bin bench-boot -- --hostel $(HOSTEL) --guest $(GUEST) --runs 10 --markdown BENCHMARKS.md

# API create+start vs hostel run, a burst of 20 starts, list/show with 1,000 VMs (not in `make test`).
bench-api: guest build
	$(CARGO) run --release -p hostel-bench --bin bench-api -- --hostel $(HOSTEL) --guest $(GUEST) --markdown BENCHMARKS.md

# API calls over HTTPS (pinned self-signed certificate) vs plain HTTP on a kept-alive
# connection, alternating rounds (not in `make test`).
bench-tls: build
	$(CARGO) run --release -p hostel-bench --bin bench-tls -- --hostel $(HOSTEL) --markdown BENCHMARKS.md

# Switch datapath (synthetic frontend) and iperf3 between two guests, against a Linux bridge
# and Open vSwitch's userspace datapath; alternating rounds (not in `make test`).
bench-net: guest build
	$(CARGO) run --release -p hostel-bench --bin bench-net -- --hostel $(HOSTEL) --switch-bench target/release/hostel-switch-bench --guest $(GUEST) --markdown BENCHMARKS.md

# A Debian 12 VM to SSH login: `hostel vm create --image debian-12` through a daemon vs plain
# QEMU with the same image, kernel and seed, alternating (builds debian-12 into
# target/images-cache if needed; minutes per boot under TCG; not in `make test`).
# The tenant firewall (crates/hostel-firewall) in-process on one core: established flows through
# 0/100/1,000 rules with 10k/100k flows at 64 B and 1514 B, and new connections per second.
# Then the switch's edge path (bench-edge), and bench-nft: nftables forwarding between veths in a
# namespace with the same policy, alternating with bench-edge rounds (needs root and nft).
bench-firewall:
	$(CARGO) run --release -p hostel-firewall --bin bench-firewall
	$(CARGO) run --release -p hostel-switch --bin bench-edge
	$(CARGO) build --release -p hostel-switch --bin bench-edge
	$(CARGO) run --release -p hostel-bench --bin bench-nft -- --rounds 3 --edge $${CARGO_TARGET_DIR:-target}/release/bench-edge

# hostel-ids replay vs suricata -r (single run mode), alternating, on a generated capture of
# BENCH_IDS_MB MB (HTTP, DNS, bulk TCP) with 100, 1,000 and 10,000 generated rules.
BENCH_IDS_MB ?= 500
bench-ids: suricata
	$(CARGO) build --release -p hostel-ids
	$${CARGO_TARGET_DIR:-target}/release/bench-ids --mb $(BENCH_IDS_MB) --rounds 3

# Inline detection's cost: iperf3 between two TCG guests through the switch with the tenant's
# VM-to-VM inspection off and on (1,000 rules; 1 MiB stream depth and the whole stream),
# alternating in each round (needs root; not in `make test`).
bench-ids-inline: guest build
	$(CARGO) run --release -p hostel-bench --bin bench-ids-inline -- --hostel $(HOSTEL) --guest $(GUEST) --rules 1000 --rounds 3 --markdown BENCHMARKS.md

# The storage backend against qemu-storage-daemon's vhost-user-blk export, by a synthetic
# frontend (no guest): IOPS and CPU per I/O, single-copy and mirrored; and the metadata commit.
# A busybox VPS created, started and deleted through the API vs `runc run` of the same
# root, alternating (root; not in `make test`).
bench-vps: build
	$(CARGO) run --release -p hostel-bench --bin bench-vps -- --hostel $(HOSTEL) --rounds 10 --markdown BENCHMARKS.md

bench-storage:
	$(CARGO) build --release -p hostel-storage --bin hostel-storage
	$(CARGO) run --release -p hostel-bench --bin bench-storage -- --hostel-storage $${CARGO_TARGET_DIR:-target}/release/hostel-storage --rounds 3 --markdown BENCHMARKS.md

# `hostel vm exec` vs SSH on one Debian 12 VM, alternating: round trip of `true` and
# throughput of `head -c 200M /dev/zero` (not in `make test`).
bench-exec: build
	$(CARGO) run --release -p hostel-bench --bin bench-exec -- --hostel $(HOSTEL) --markdown BENCHMARKS.md

bench-images: build
	$(CARGO) run --release -p hostel-bench --bin bench-images -- --hostel $(HOSTEL) --runs 5 --markdown BENCHMARKS.md

# hostel-scan's file-level tier (an ext4 image read in userspace) against clamscan and yara on
# the same files with the same signatures (findings must be identical), and the streaming
# matcher; per-core MiB/s from CPU time, alternating rounds (needs clamav, clamav-testfiles, yara).
BENCH_SCAN_MB ?= 128
bench-scan: deps
	$(CARGO) build --release -p hostel-scan --bin bench-scan
	$${CARGO_TARGET_DIR:-target}/release/bench-scan --mb $(BENCH_SCAN_MB) --rounds 3 --markdown BENCHMARKS.md
