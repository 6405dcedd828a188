#!/usr/bin/env bash
# Installs what the test suite needs and is not built by cargo. Safe to run
# again: it only installs what is missing.
#
# Today: curl (used by the local-network script and the provider tests),
# dig (the DNS tests), nginx, gnuplot, dnsperf and NSD (the benchmark's
# baselines, load tool and charts; its quick run is part of the suite), the
# storage servers the provider tests start (moto's S3 server from PyPI,
# Azurite from npm, rclone's WebDAV server from Debian), PostgreSQL's server
# binaries (the tests make their own clusters), Prometheus and promtool
# (the metrics, rules and scrape tests), systemd-analyze (the unit checks),
# checkov and python-hcl2 (the Terraform checks),
# and cargo-nextest when missing (the suite falls back to `cargo test` if
# that install fails).
set -euo pipefail

need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
[ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v gnuplot >/dev/null || need_apt+=(gnuplot-nox)
command -v dig >/dev/null || need_apt+=(bind9-dnsutils)
command -v dnsperf >/dev/null || need_apt+=(dnsperf)
[ -x /usr/sbin/nsd ] || need_apt+=(nsd)
command -v rclone >/dev/null || need_apt+=(rclone)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
command -v npm >/dev/null || need_apt+=(npm)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    # Servers the tests start themselves (nginx, NSD) must not be started
    # as system services by their packages.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "please install: ${need_apt[*]}" >&2
    exit 1
  fi
fi
# S3: moto's server (pinned to the 5.x series the tests were written for).
if ! command -v moto_server >/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5.1,<6' \
    || python3 -m pip install --quiet --break-system-packages 'moto[server]>=5.1,<6'
fi
# Terraform checks: python-hcl2 parses every .tf, checkov scans them.
if ! command -v checkov >/dev/null || ! python3 -c 'import hcl2' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check 'checkov>=3,<4' 'python-hcl2>=4,<8' \
    || python3 -m pip install --quiet --break-system-packages 'checkov>=3,<4' 'python-hcl2>=4,<8'
fi
# Azure Blob: Azurite.
if ! command -v azurite-blob >/dev/null; then
  npm install --global --silent --no-fund --no-audit 'azurite@3' >/dev/null
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest >/dev/null 2>&1 || echo "cargo-nextest unavailable; using cargo test" >&2
fi
