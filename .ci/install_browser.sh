#!/usr/bin/env bash
# The headless browser the UI test (itap_assets_tests/ui) drives: Debian's chromium and chromium-driver.
exec "$(dirname "$0")/apt_install.sh" "chromium chromium-driver" /usr/bin/chromium /usr/bin/chromedriver
