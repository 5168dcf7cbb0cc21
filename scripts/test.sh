#!/usr/bin/env bash
# Runs every check and test of the workspace, on SQLite and then on PostgreSQL.
#
# One command on a fresh Debian 12 machine with the Rust toolchain: as root it installs what
# the tests need from Debian (PostgreSQL server binaries, Chromium, ChromeDriver, a font, the
# Knot DNS server that the DNS check test starts on a loopback port, npm for the web XMPP
# clients of tests/js, Prosody and ejabberd that the federation tests start as peers),
# without starting any system service; as another user it says what to install.
#
# Steps: lints (cargo fmt, clippy) -> one build of the binaries and test binaries -> a
# throwaway PostgreSQL cluster on a free loopback port -> the suite with SQLite -> the suite
# with PostgreSQL (ROOKERY_TEST_DATABASE_URL) -> clean-up. Both runs happen even if the first
# fails; the script fails if either does.
#
# Environment:
#   ROOKERY_SKIP_LINT=1           skip cargo fmt and clippy (quick local runs)
#   ROOKERY_TEST_ENGINES="sqlite" run only some engines (default: "sqlite postgres")
#   ROOKERY_TEST_ONLY_PG_SMOKE=1  only start the throwaway PostgreSQL, run `select 1`, stop
#   TEST_LOG=1                    show the output of the processes the tests start
# Arguments are passed to the test runner (for example a test name filter).

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT="$(pwd)"

# CI runs without a login shell: find rustup's cargo even if PATH lacks it.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
export PATH
if [[ -n "${CI:-}" ]]; then
    export CI
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"

CHROMIUM_BIN="${CHROMIUM:-/usr/bin/chromium}"
CHROMEDRIVER_BIN="${CHROMEDRIVER:-/usr/bin/chromedriver}"
FONT_FILE=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
KNOTD_BIN="${KNOTD:-/usr/sbin/knotd}"
# What tests/src/peers.rs runs: Prosody's programs, and ejabberd's Erlang application
# (started with erl, not ejabberdctl; the Debian package brings both).
PROSODY_BIN=/usr/bin/prosody
EJABBERD_CTL=/usr/sbin/ejabberdctl
POLICY_RC=/usr/sbin/policy-rc.d

created_policy_rc=0
pg_dir=""
pg_bin=""
pg_port=""
pg_started=0
pg_as_owner=()

say() { printf '\n==> %s\n' "$*"; }
fail() {
    printf 'scripts/test.sh: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------
# Clean-up: runs on every exit, normal or not.

remove_policy_rc() {
    if [[ "$created_policy_rc" == 1 ]]; then
        rm -f "$POLICY_RC"
        created_policy_rc=0
    fi
}

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local status=$?
    stop_postgres || true
    if [[ -n "$pg_dir" && -d "$pg_dir" ]]; then
        rm -rf "$pg_dir"
    fi
    remove_policy_rc
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------
# What the tests need from the system.

# The newest PostgreSQL server's bin folder (Debian: /usr/lib/postgresql/<major>/bin).
find_pg_bin() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]]; then
            printf '%s\n' "$dir"
        fi
    done | sort -V | tail -n 1
}

# Installs the Debian packages named as arguments that are missing, only what is missing.
install_missing() {
    local wanted=("$@") missing=() package
    for package in "${wanted[@]}"; do
        case "$package" in
        postgresql) [[ -n "$(find_pg_bin)" ]] || missing+=(postgresql) ;;
        chromium) [[ -x "$CHROMIUM_BIN" ]] || missing+=(chromium) ;;
        chromium-driver) [[ -x "$CHROMEDRIVER_BIN" ]] || missing+=(chromium-driver) ;;
        fonts-dejavu-core) [[ -f "$FONT_FILE" ]] || missing+=(fonts-dejavu-core) ;;
        knot) [[ -x "$KNOTD_BIN" ]] || missing+=(knot) ;;
        npm) command -v npm >/dev/null 2>&1 || missing+=(npm) ;;
        prosody) [[ -x "$PROSODY_BIN" ]] || missing+=(prosody) ;;
        ejabberd) [[ -x "$EJABBERD_CTL" ]] && command -v erl >/dev/null 2>&1 || missing+=(ejabberd) ;;
        *) fail "unknown requirement $package" ;;
        esac
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi

    if [[ "$(id -u)" -ne 0 ]]; then
        fail "missing Debian packages: ${missing[*]}. Install them with
    sudo apt-get install --no-install-recommends ${missing[*]}
or run this script as root, which installs them."
    fi
    command -v apt-get >/dev/null 2>&1 ||
        fail "missing ${missing[*]} and no apt-get to install them with: install them by hand"

    say "installing ${missing[*]} from Debian"
    # Package scripts must not start system services (PostgreSQL's main cluster, say):
    # invoke-rc.d and deb-systemd-invoke ask policy-rc.d, and 101 means "no".
    if [[ ! -e "$POLICY_RC" ]]; then
        printf '#!/bin/sh\n# Written by rookery scripts/test.sh while it installs packages.\nexit 101\n' >"$POLICY_RC"
        chmod 0755 "$POLICY_RC"
        created_policy_rc=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get -q -o DPkg::Lock::Timeout=300 update
    apt-get -q -y -o DPkg::Lock::Timeout=300 install --no-install-recommends "${missing[@]}" </dev/null
    remove_policy_rc

    for package in "${missing[@]}"; do
        case "$package" in
        postgresql) [[ -n "$(find_pg_bin)" ]] || fail "postgresql installed, but no server under /usr/lib/postgresql/*/bin" ;;
        chromium) [[ -x "$CHROMIUM_BIN" ]] || fail "chromium installed, but $CHROMIUM_BIN is missing" ;;
        chromium-driver) [[ -x "$CHROMEDRIVER_BIN" ]] || fail "chromium-driver installed, but $CHROMEDRIVER_BIN is missing" ;;
        knot) [[ -x "$KNOTD_BIN" ]] || fail "knot installed, but $KNOTD_BIN is missing" ;;
        prosody) [[ -x "$PROSODY_BIN" ]] || fail "prosody installed, but $PROSODY_BIN is missing" ;;
        ejabberd) [[ -x "$EJABBERD_CTL" ]] && command -v erl >/dev/null 2>&1 ||
            fail "ejabberd installed, but $EJABBERD_CTL or erl is missing" ;;
        esac
    done
}

# ---------------------------------------------------------------------------------------
# A throwaway PostgreSQL cluster: temp folder, loopback only, trust auth, no durability.

# A loopback port nobody listens on right now (pg_ctl's failure to bind is retried anyway).
pick_port() {
    local port tries
    for tries in $(seq 1 50); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return 0
        fi
        : "$tries"
    done
    fail "found no free loopback port"
}

# Runs a command as the cluster's owner, from its folder (the caller's may be unreadable).
as_pg_owner() {
    (cd "$pg_dir" && "${pg_as_owner[@]}" "$@")
}

start_postgres() {
    pg_bin="$(find_pg_bin)"
    [[ -n "$pg_bin" ]] || fail "no PostgreSQL server under /usr/lib/postgresql/*/bin"

    if [[ "$(id -u)" -eq 0 ]]; then
        # PostgreSQL refuses to run as root: run it as the postgres system user. setpriv
        # (unlike su and runuser) keeps the raised open-file limit.
        if ! id -u postgres >/dev/null 2>&1; then
            useradd --system --user-group --home-dir /var/lib/postgresql --no-create-home \
                --shell /usr/sbin/nologin postgres
        fi
        pg_dir="$(mktemp -d /tmp/rookery-pg.XXXXXX)"
        chown postgres:postgres "$pg_dir"
        pg_as_owner=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    else
        pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/rookery-pg.XXXXXX")"
        pg_as_owner=()
    fi
    chmod 0700 "$pg_dir"

    if ! as_pg_owner "$pg_bin/initdb" --pgdata="$pg_dir/data" --username=postgres \
        --auth=trust --encoding=UTF8 --locale=C --no-sync >"$pg_dir/initdb.log" 2>&1; then
        cat "$pg_dir/initdb.log" >&2
        fail "initdb failed"
    fi
    cat >>"$pg_dir/data/postgresql.conf" <<EOF

# scripts/test.sh: a throwaway cluster for tests; durability is not wanted.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$pg_dir'
fsync = off
full_page_writes = off
synchronous_commit = off
max_connections = 300
EOF

    local attempt
    for attempt in 1 2 3 4 5; do
        pg_port="$(pick_port)"
        if as_pg_owner "$pg_bin/pg_ctl" --pgdata="$pg_dir/data" --log="$pg_dir/postgres.log" \
            --options="-p $pg_port" --wait --timeout=60 --silent start >/dev/null 2>&1; then
            pg_started=1
            break
        fi
        if ! grep -q 'could not bind\|Address already in use' "$pg_dir/postgres.log" 2>/dev/null; then
            cat "$pg_dir/postgres.log" >&2 2>/dev/null || true
            fail "PostgreSQL did not start"
        fi
        echo "port $pg_port was taken (attempt $attempt); trying another" >&2
    done
    [[ "$pg_started" == 1 ]] || fail "PostgreSQL found no free port"
    PG_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
    say "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') is up on 127.0.0.1:$pg_port (data in $pg_dir)"
}

stop_postgres() {
    if [[ "$pg_started" == 1 ]]; then
        as_pg_owner "$pg_bin/pg_ctl" --pgdata="$pg_dir/data" --mode=immediate --wait \
            --silent stop >/dev/null 2>&1 || true
        pg_started=0
    fi
}

if [[ "${ROOKERY_TEST_ONLY_PG_SMOKE:-}" == 1 ]]; then
    install_missing postgresql
    start_postgres
    "$pg_bin/psql" --no-psqlrc --quiet --tuples-only --no-align "$PG_URL" -c 'select 1'
    say "PostgreSQL smoke test passed"
    exit 0
fi

# ---------------------------------------------------------------------------------------
# Lint, build once, test on each engine.

engines="${ROOKERY_TEST_ENGINES:-sqlite postgres}"
for engine in $engines; do
    [[ "$engine" == sqlite || "$engine" == postgres ]] ||
        fail "ROOKERY_TEST_ENGINES names $engine; known engines: sqlite postgres"
done
needs=(chromium chromium-driver fonts-dejavu-core knot npm prosody ejabberd)
if [[ " $engines " == *" postgres "* ]]; then
    needs+=(postgresql)
fi
install_missing "${needs[@]}"

# Python XMPP client libraries (slixmpp) for the node's end-to-end tests, in a virtualenv
# kept at .venv and refreshed when tests/python/requirements.txt changes.
setup_venv() {
    local venv="$REPO_ROOT/.venv" requirements="$REPO_ROOT/tests/python/requirements.txt" stamp
    stamp="$venv/.requirements.sha256"
    if [[ -x "$venv/bin/python" && -f "$stamp" ]] && sha256sum --status -c "$stamp" 2>/dev/null; then
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || fail "python3 is needed for the XMPP client tests"
    python3 -c 'import venv, ensurepip' 2>/dev/null ||
        fail "python3 lacks venv/ensurepip (Debian: apt-get install python3-venv)"
    say "creating the Python test virtualenv (.venv) from tests/python/requirements.txt"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    sha256sum "$requirements" >"$stamp"
}
setup_venv
export ROOKERY_TEST_PYTHON="$REPO_ROOT/.venv/bin/python"

# Web XMPP clients (Converse.js) that the node's web tests run in Chromium, from npm into
# tests/js/node_modules, refreshed when tests/js/package-lock.json changes.
setup_npm() {
    local js="$REPO_ROOT/tests/js" stamp
    stamp="$js/node_modules/.package-lock.sha256"
    if [[ -f "$stamp" ]] && (cd "$js" && sha256sum --status -c "$stamp" 2>/dev/null); then
        return 0
    fi
    say "installing the web test clients (tests/js) with npm ci"
    (cd "$js" && npm ci --ignore-scripts --no-audit --no-fund && sha256sum package-lock.json >"$stamp")
}
setup_npm

if cargo nextest --version >/dev/null 2>&1; then
    runner=nextest
else
    runner=cargo-test
    echo "cargo-nextest is not installed: using cargo test" >&2
fi

if [[ "${ROOKERY_SKIP_LINT:-}" != 1 ]]; then
    say "cargo fmt --all --check"
    cargo fmt --all --check
    say "cargo clippy --workspace --all-targets -- -D warnings"
    cargo clippy --workspace --all-targets -- -D warnings
fi

say "building the binaries and the test binaries"
cargo build --workspace --bins
if [[ "$runner" == nextest ]]; then
    cargo nextest run --workspace --no-run
else
    cargo test --workspace --no-run
fi

run_suite() {
    if [[ "$runner" == nextest ]]; then
        cargo nextest run --workspace --no-fail-fast "$@"
    else
        cargo test --workspace --no-fail-fast "$@"
    fi
}

declare -A outcome=()
status=0

if [[ " $engines " == *" sqlite "* ]]; then
    if [[ "$runner" == nextest && $# -eq 0 ]]; then
        # nextest does not run doc tests; they need no database, so run them once.
        say "doc tests"
        if ! cargo test --workspace --doc; then
            status=1
        fi
    fi
    say "test suite on SQLite (ROOKERY_TEST_DATABASE_URL unset)"
    if (unset ROOKERY_TEST_DATABASE_URL && run_suite "$@"); then
        outcome[sqlite]=ok
    else
        outcome[sqlite]=FAILED
        status=1
    fi
fi

if [[ " $engines " == *" postgres "* ]]; then
    start_postgres
    say "test suite on PostgreSQL (ROOKERY_TEST_DATABASE_URL=$PG_URL)"
    if ROOKERY_TEST_DATABASE_URL="$PG_URL" run_suite "$@"; then
        outcome[postgres]=ok
    else
        outcome[postgres]=FAILED
        status=1
    fi
    stop_postgres
fi

say "results"
for engine in $engines; do
    printf '  %-10s %s\n' "$engine" "${outcome[$engine]:-not run}"
done
printf '  screenshots: %s\n' "$REPO_ROOT/target/screenshots"
exit "$status"
