#!/usr/bin/env bash
# Installs the PostgreSQL 15 server that the instance tests start (itap_assets_tests/postgres_server.py): Debian's
# postgresql package (initdb and pg_ctl in /usr/lib/postgresql/15/bin, and the postgres user the server runs as
# when the tests run as root). Idempotent and quiet: does nothing when both binaries exist. The package's own
# cluster is not used (the tests make theirs in a temporary directory). apt-get only; root, or sudo when there is one.
set -euo pipefail

BIN=/usr/lib/postgresql/15/bin
if [[ -x "$BIN/initdb" && -x "$BIN/pg_ctl" ]]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_postgres.sh: apt-get not found; install the PostgreSQL 15 server ($BIN/initdb, $BIN/pg_ctl)" \
         "with your package manager" >&2
    exit 1
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install_postgres.sh: run as root (or install sudo) to install postgresql" >&2
        exit 1
    fi
fi

log="$(mktemp -t install_postgres.XXXXXX.log)"
trap 'rm -f "$log"' EXIT

echo "install_postgres.sh: installing postgresql with apt-get" >&2
if ! { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
       "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
           postgresql-15; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install_postgres.sh: apt-get failed (output above)" >&2
    exit 1
fi

for binary in "$BIN/initdb" "$BIN/pg_ctl"; do
    if [[ ! -x "$binary" ]]; then
        cat "$log" >&2
        echo "install_postgres.sh: apt-get finished but $binary is still missing" >&2
        exit 1
    fi
done
