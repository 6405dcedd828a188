#!/usr/bin/env bash
# Installs the console's npm packages (console/package-lock.json, exactly)
# into console/node_modules, which the hub's build needs to bundle the
# console it embeds. Safe to run again: it installs only when the lock file
# changed. Needs npm; without it, it says so and the hub is built with a
# page at /console that says how to build it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/console"
if ! command -v npm >/dev/null; then
  echo "npm is not installed: the hub will be built without its console" >&2
  exit 0
fi
made_from=$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum)
if [ "$(cat "$dir/node_modules/.made-from" 2>/dev/null)" = "$made_from" ]; then
  exit 0
fi
echo "installing console/package-lock.json into console/node_modules" >&2
npm ci --prefix "$dir" --silent --no-fund --no-audit >/dev/null
echo "$made_from" > "$dir/node_modules/.made-from"
