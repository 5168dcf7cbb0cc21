#!/usr/bin/env bash
# Benchmarks provisioning (issue 4, "Performance"): builds the panel, the node and the
# benchmark in release mode and runs `rookery-provision-bench`, which starts a panel and
# three enrolled nodes on loopback (SQLite, throwaway folders), then prints the median time
# from "domain created" to "first successful XMPP login on its node" and the time for
# 1,000 domains to converge over the three nodes.
#
#   scripts/bench-provisioning.sh                         # 3 nodes, 10 samples, 1,000 domains
#   scripts/bench-provisioning.sh --domains 200 --nodes 2
#
# Everything listens on 127.0.0.1 and is killed at the end.

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1 && [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

cargo build --release -p rookery -p rookery-node -p rookery-tests \
    --bin rookery --bin rookery-node --bin rookery-provision-bench

# The harness finds `rookery` and `rookery-node` beside the benchmark binary.
exec target/release/rookery-provision-bench "$@"
