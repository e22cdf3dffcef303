#!/usr/bin/env bash
# Installs the headless browser that the UI test (itap_assets_tests/ui) drives: Debian's chromium and
# chromium-driver. Idempotent and quiet: does nothing when /usr/bin/chromium and /usr/bin/chromedriver exist.
# apt-get only (no browser downloads); runs as root, or through sudo when there is one.
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: apt-get not found; install chromium and chromium-driver (/usr/bin/chromium," \
         "/usr/bin/chromedriver) with your package manager" >&2
    exit 1
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install_browser.sh: run as root (or install sudo) to install chromium and chromium-driver" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
log="$(mktemp -t install_browser.XXXXXX.log)"
trap 'rm -f "$log"' EXIT

echo "install_browser.sh: installing chromium and chromium-driver with apt-get" >&2
if ! { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
       "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
           chromium chromium-driver; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install_browser.sh: apt-get failed (output above)" >&2
    exit 1
fi

for binary in /usr/bin/chromium /usr/bin/chromedriver; do
    if [[ ! -x "$binary" ]]; then
        cat "$log" >&2
        echo "install_browser.sh: apt-get finished but $binary is still missing" >&2
        exit 1
    fi
done
