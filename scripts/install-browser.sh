#!/usr/bin/env bash
# Install Debian's Chromium for tests/test_browser.py (driven by Playwright; `playwright install` is never used: it
# downloads its own browser build). Idempotent: returns at once when /usr/bin/chromium is already there.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
bash "$(dirname "$0")/apt-install.sh" install-browser.sh chromium
/usr/bin/chromium --version
