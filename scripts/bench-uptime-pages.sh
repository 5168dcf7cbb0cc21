#!/usr/bin/env bash
# Benchmarks the pages that show uptime (issue 6, "Performance"): builds the panel and the
# benchmark in release mode and runs `rookery-uptime-bench`, which starts a panel (prober
# off, no local node, a throwaway SQLite database), makes an admin and two customers
# through the real flows, seeds 10,000 domains with 90 days of uptime data straight into
# the database, then prints the median, p90 and max render time of the admin's uptime
# overview, the customers' dashboards and domain lists, a domain page with its uptime card
# and the public status page (target: every median under 20 ms), and the time of their SQL
# alone.
#
#   scripts/bench-uptime-pages.sh                           # 10,000 domains, 35 days hourly
#   scripts/bench-uptime-pages.sh --hourly-days 8 --requests 100
#   ROOKERY_TEST_DATABASE_URL=postgres://… scripts/bench-uptime-pages.sh   # on PostgreSQL
#
# The panel listens on 127.0.0.1 and is killed at the end; its database is deleted.

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1 && [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

cargo build --release -p rookery -p rookery-tests --bin rookery --bin rookery-uptime-bench

# The harness finds `rookery` beside the benchmark binary.
exec target/release/rookery-uptime-bench "$@"
