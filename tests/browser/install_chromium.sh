#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests (tests/browser/). Idempotent: a no-op when it is already there.
# Called by the Makefile's `test` target; needs root (or sudo) and the Debian mirrors.
# Never downloads a browser build of Playwright's own (`playwright install` cannot work on this network).
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [[ -x "$CHROMIUM" ]]; then
    exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
else
    echo "install_chromium.sh: $CHROMIUM is missing and this user is not root (and has no sudo): install Debian's 'chromium' package" >&2
    exit 1
fi

echo "install_chromium.sh: installing Debian's chromium package (for the browser tests)" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null

if [[ ! -x "$CHROMIUM" ]]; then
    echo "install_chromium.sh: apt-get finished but $CHROMIUM is still missing" >&2
    exit 1
fi
"$CHROMIUM" --version >&2 || true
