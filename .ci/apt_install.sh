#!/usr/bin/env bash
# Installs Debian packages a test needs, unless its binaries are already there: idempotent and quiet.
#   .ci/apt_install.sh "<packages>" <binary> [<binary> ...]
# apt-get only (nothing downloaded from elsewhere); runs as root, or through sudo when there is one.
set -euo pipefail

packages=$1
shift
missing=0
for binary in "$@"; do [[ -x "$binary" ]] || missing=1; done
(( missing )) || exit 0

name="apt_install.sh ($packages)"
if ! command -v apt-get >/dev/null 2>&1; then
    echo "$name: apt-get not found; install $packages ($*) with your package manager" >&2
    exit 1
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "$name: run as root (or install sudo) to install $packages" >&2
        exit 1
    fi
fi

log="$(mktemp -t apt_install.XXXXXX.log)"
trap 'rm -f "$log"' EXIT

echo "$name: installing with apt-get" >&2
# shellcheck disable=SC2086 # $packages is a list of package names
if ! { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
       "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
           $packages; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "$name: apt-get failed (output above)" >&2
    exit 1
fi

for binary in "$@"; do
    if [[ ! -x "$binary" ]]; then
        cat "$log" >&2
        echo "$name: apt-get finished but $binary is still missing" >&2
        exit 1
    fi
done
