#!/usr/bin/env bash
# Starts a local ferry network on loopback and prints what to try.
#
#   ./scripts/run-local.sh            build, start, print curl lines; Ctrl-C stops it
#
# Today the network is one hub (spokes arrive with the tunnel). It uses
# embedded SQLite and a local folder as the storage provider, all under
# ./.ferry-local/ (delete that folder to start afresh). Ports: FERRY_PORT
# (default 8080).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
port=${FERRY_PORT:-8080}
state=$root/.ferry-local
mkdir -p "$state/hub" "$state/data"

if ! command -v cargo >/dev/null; then
  echo "cargo is needed: install Rust from your distribution or rustup" >&2
  exit 1
fi
echo "building ferry (first build takes a few minutes)…" >&2
cargo build --release --quiet -p ferry-hub
hub_bin=${CARGO_TARGET_DIR:-$root/target}/release/ferry-hub

# Secrets stay in files under .ferry-local, made once.
[ -s "$state/master.key" ] || { head -c 32 /dev/urandom | base64 > "$state/master.key"; chmod 600 "$state/master.key"; }
[ -s "$state/admin.token" ] || { head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$state/admin.token"; chmod 600 "$state/admin.token"; }
admin_token=$(cat "$state/admin.token")

cat > "$state/hub.toml" <<TOML
# Written by scripts/run-local.sh for a local, plain-HTTP hub on loopback.
state_dir = "$state/hub"

[api]
listen = "127.0.0.1:$port"
plain_http = true
shutdown_grace_secs = 5

[secrets]
master_key_file = "$state/master.key"

[providers.fs]
allowed_roots = ["$state/data"]

[providers.memory]
enabled = true
TOML

"$hub_bin" --check-config "$state/hub.toml" >/dev/null
FERRY_ADMIN_TOKEN=$admin_token "$hub_bin" --config "$state/hub.toml" 2> "$state/hub.log" &
hub_pid=$!
trap 'kill $hub_pid 2>/dev/null; wait $hub_pid 2>/dev/null' EXIT INT TERM

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 $hub_pid 2>/dev/null || { echo "the hub did not start; its log:" >&2; cat "$state/hub.log" >&2; exit 1; }
  sleep 0.1
done

api=http://127.0.0.1:$port
cat <<TXT

ferry is running on loopback:
  hub   $api   (log: $state/hub.log, data: $state/data)

Try it (copy and paste):

  export FERRY=$api
  export ADMIN=$admin_token

  # an account; its API key is shown once
  KEY=\$(curl -s -X POST \$FERRY/v1/accounts -H "Authorization: Bearer \$ADMIN" \\
        -H 'content-type: application/json' -d '{"name":"demo"}' | sed -E 's/.*"api_key":"([^"]+)".*/\1/')

  # a connection to a local folder
  curl -s -X POST \$FERRY/v1/connections -H "Authorization: Bearer \$KEY" \\
       -H 'content-type: application/json' \\
       -d '{"name":"local","provider":"fs","config":{"root":"$state/data/demo"}}'

  # upload, list, download, check the events
  curl -s -X PUT --data-binary @README.md -H 'content-type: text/markdown' -H "Authorization: Bearer \$KEY" \$FERRY/v1/connections/local/files/docs/README.md
  curl -s -H "Authorization: Bearer \$KEY" \$FERRY/v1/connections/local/list/docs
  curl -s -H "Authorization: Bearer \$KEY" -H 'want-repr-digest: sha-256=1' -D - \$FERRY/v1/connections/local/files/docs/README.md -o /dev/null
  curl -s -H "Authorization: Bearer \$KEY" \$FERRY/v1/events
  curl -s \$FERRY/metrics | head

Press Ctrl-C to stop.
TXT
wait $hub_pid
