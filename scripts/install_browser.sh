#!/usr/bin/env bash
# What tests/test_browser.py needs: Debian's chromium (the test launches /usr/bin/chromium; Playwright downloads
# no browser) and the Python package playwright at the version pinned in constraints.txt. `make test` runs this
# after scripts/setup.sh. Re-running is cheap: it installs only what is missing.
# Where chromium cannot be installed (no apt-get, or neither root nor password-less sudo) it says what to do and
# exits 0, and the browser test is skipped with that reason; with $CI set it exits 1, so CI cannot skip the test.
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMIUM=/usr/bin/chromium
in_ci() { case "${CI:-}" in "" | 0 | false | False | FALSE | no) return 1 ;; *) return 0 ;; esac; }

[ -x .venv/bin/python ] || { echo "install_browser.sh: no .venv here; run scripts/setup.sh first." >&2; exit 1; }

if [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"                                   # never prompts: `make test` may run without a terminal
    else
        SUDO="none"
    fi
    if [ "$SUDO" = none ] || ! command -v apt-get >/dev/null; then
        echo "install_browser.sh: $CHROMIUM is missing and cannot be installed from here (needs apt-get as root" \
             "or password-less sudo). Install Debian's chromium package (\`sudo apt-get install chromium\`), then run" \
             "\`bash scripts/install_browser.sh\` again." >&2
        if in_ci; then exit 1; fi
        echo "install_browser.sh: not CI, so going on: tests/test_browser.py will be skipped." >&2
    else
        echo "install_browser.sh: installing chromium (Debian package) for tests/test_browser.py"
        $SUDO apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            chromium fonts-liberation
    fi
fi

want=$(sed -n 's/^playwright==//p' constraints.txt)
[ -n "$want" ] || { echo "install_browser.sh: constraints.txt pins no playwright==VERSION" >&2; exit 1; }
have=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("playwright"))' 2>/dev/null || true)
if [ "$have" != "$want" ]; then
    .venv/bin/python -m pip install --quiet -c constraints.txt "playwright==$want"
fi
.venv/bin/python -c 'import playwright.sync_api'
if [ -x "$CHROMIUM" ]; then
    echo "browser test ready: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM"), playwright $want"
fi
