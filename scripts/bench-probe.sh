#!/usr/bin/env bash
# Benchmarks the panel's prober (issue 6, "Performance"): builds the panel, the node and the
# benchmark in release mode and runs `rookery-probe-bench`, which starts a panel and two
# enrolled nodes on loopback (SQLite, throwaway folders), adds 5,000 domains through the
# panel, waits until the panel probes every one of them (a real XMPP login per domain per
# 60 s interval), then measures for 180 s and prints probes and rounds per minute, the
# share of successful probes, and the panel's CPU (% of one core) and peak memory.
#
#   scripts/bench-probe.sh                                  # 2 nodes, 5,000 domains, 180 s
#   scripts/bench-probe.sh --domains 500 --secs 60 --nodes 1
#
# Everything listens on 127.0.0.1 and is killed at the end.

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1 && [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

cargo build --release -p rookery -p rookery-node -p rookery-tests \
    --bin rookery --bin rookery-node --bin rookery-probe-bench

# The harness finds `rookery` and `rookery-node` beside the benchmark binary.
exec target/release/rookery-probe-bench "$@"
