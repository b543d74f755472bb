#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain. Idempotent: each step checks
# first, so a second run costs nothing. Runs on a fresh Debian machine as root (CI) and tells a
# non-root developer what to install instead of failing half-way.
set -euo pipefail

need_rust_component() {
  if ! cargo "$1" --version >/dev/null 2>&1; then
    rustup component add "$2"
  fi
}
need_rust_component fmt rustfmt
need_rust_component clippy clippy

# An independent Parquet reader (DuckDB, tests/audit.rs) and a real SMTP server (aiosmtpd,
# tests/paging.rs) from PyPI, in a project-local virtualenv so nothing on the machine changes.
VENV="${SCIMWATCH_TEST_VENV:-$PWD/.venv}"
if ! "$VENV/bin/python" -c 'import duckdb, aiosmtpd' >/dev/null 2>&1; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'duckdb==2.0.1' 'aiosmtpd==1.4.6'
fi

# openssl makes the private CA and server certificates of the TLS paging tests.
if ! command -v openssl >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >/dev/null
  else
    echo "install openssl for the TLS paging tests" >&2
    exit 1
  fi
fi

# promtool, a Prometheus server (Debian's `prometheus`, 2.42) and amtool (Debian's
# `prometheus-alertmanager`) for the metrics, rules and end-to-end tests.
if ! command -v promtool >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null
  else
    echo "install Debian's prometheus and prometheus-alertmanager packages for the metrics tests" >&2
    exit 1
  fi
fi
