#!/usr/bin/env bash
# Runs the whole test suite: unit tests, the per-crate integration tests and
# the end-to-end tests that start the real binaries on loopback.
#
#   ./scripts/test.sh                 everything
#   ./scripts/test.sh -E 'test(tls)'  extra arguments go to cargo nextest
#
# It installs what the tests need first (idempotent).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/install-test-deps.sh"
# Every package of the lock file, for every platform: the feature-set test
# reads the whole dependency tree offline (`cargo tree --target all`),
# which names packages no build on this machine downloads.
cargo fetch --locked --quiet

if cargo nextest --version >/dev/null 2>&1; then
  # Build first, so the end-to-end tests find every binary.
  cargo build --workspace --bins
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace --no-fail-fast "$@"
fi
