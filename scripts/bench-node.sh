#!/usr/bin/env bash
# Benchmarks rookery-node with the load generator (issue 3, "Performance"): builds both in
# release mode, raises the open-file limit, and runs `rookery-load`, which starts its own
# node on free loopback ports with a throwaway SQLite store, logs N sessions in over
# STARTTLS + SCRAM-SHA-256, holds them, routes messages between pairs and prints the figures.
#
#   scripts/bench-node.sh                      # 1,000 sessions, 10 s of messages
#   scripts/bench-node.sh --sessions 10000     # the issue's target size
#   scripts/bench-node.sh --help               # every option of rookery-load
#
# Arguments go to rookery-load. ROOKERY_BENCH_NOFILE sets the open-file limit (default
# 200000; raising the hard limit needs root). Everything stays on 127.0.0.1, the node is
# killed at the end, and nothing is left behind unless --keep is given.

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1 && [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

cargo build --release -p rookery-node -p rookery-tests --bin rookery-load --bin rookery-node

nofile="${ROOKERY_BENCH_NOFILE:-200000}"
if ! ulimit -n "$nofile" 2>/dev/null; then
    # Not root: go as high as the hard limit allows.
    ulimit -n "$(ulimit -H -n)"
    echo "bench-node.sh: open-file limit is $(ulimit -n) (could not raise it to $nofile)" >&2
fi

exec target/release/rookery-load --node-bin target/release/rookery-node "$@"
