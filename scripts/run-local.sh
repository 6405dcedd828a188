#!/usr/bin/env bash
# Starts a local ferry network on loopback and prints what to try.
#
#   ./scripts/run-local.sh            build, start, print curl lines; Ctrl-C stops it
#
# The network is one hub on 127.0.0.1 and two spokes (fra1 on 127.0.0.2,
# ams1 on 127.0.0.3), with embedded SQLite and a local folder as the
# storage provider, all under ./.ferry-local/ (delete that folder to start
# afresh). Ports: the hub's API on FERRY_PORT (default 8080), the spokes'
# on the next two, the hub's QUIC tunnel endpoint on UDP FERRY_PORT+100, its
# steering DNS (zone ferry.local) on UDP and TCP FERRY_PORT+53, and every
# node's operator listener (/metrics) on its own address, port FERRY_PORT+200.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
port=${FERRY_PORT:-8080}
state=$root/.ferry-local
tunnel_port=$((port + 100))
dns_port=$((port + 53))
metrics_port=$((port + 200))
mkdir -p "$state/hub" "$state/data"

if ! command -v cargo >/dev/null; then
  echo "cargo is needed: install Rust from your distribution or rustup" >&2
  exit 1
fi
# The console's packages, which the hub's build bundles into /console.
"$root/scripts/console-packages.sh"
echo "building ferry (first build takes a few minutes)…" >&2
cargo build --release --quiet -p ferry-hub -p ferry-spoke -p ferry-client
hub_bin=${CARGO_TARGET_DIR:-$root/target}/release/ferry-hub
ferry_bin=${CARGO_TARGET_DIR:-$root/target}/release/ferry
spoke_bin=${CARGO_TARGET_DIR:-$root/target}/release/ferry-spoke

# Secrets stay in files under .ferry-local, made once.
[ -s "$state/master.key" ] || { head -c 32 /dev/urandom | base64 > "$state/master.key"; chmod 600 "$state/master.key"; }
# The hub refuses an admin token shorter than 32 characters: 64 hex digits.
if [ "$(tr -d '\n' 2>/dev/null < "$state/admin.token" | wc -c)" -lt 32 ]; then
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$state/admin.token"
  chmod 600 "$state/admin.token"
fi
admin_token=$(cat "$state/admin.token")

cat > "$state/hub.toml" <<TOML
# Written by scripts/run-local.sh for a local, plain-HTTP hub on loopback.
state_dir = "$state/hub"

[api]
listen = "127.0.0.1:$port"
plain_http = true
shutdown_grace_secs = 5

[metrics]
listen = "127.0.0.1:$metrics_port"

[tunnel]
listen = "127.0.0.1:$tunnel_port"

[dns]
listen = "127.0.0.1:$dns_port"
zone = "ferry.local"

[secrets]
master_key_file = "$state/master.key"

[providers.fs]
allowed_roots = ["$state/data"]

[providers.memory]
enabled = true
TOML

"$hub_bin" --check-config "$state/hub.toml" >/dev/null
FERRY_ADMIN_TOKEN=$admin_token "$hub_bin" --config "$state/hub.toml" 2> "$state/hub.log" &
pids=($!)
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT INT TERM

# wait_ready NAME URL LOG: until URL/readyz answers 200 (30 s at most).
wait_ready() {
  for _ in $(seq 1 300); do
    curl -fsS "$2/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$1 did not become ready; its log:" >&2
  cat "$3" >&2
  exit 1
}
wait_ready hub "http://127.0.0.1:$port" "$state/hub.log"

# Two spokes. The first start enrols each with a one-time join token; after
# that its key and certificate in .ferry-local/<name>/ are its identity.
spoke_port=$port
spoke_ip=1
for name in fra1 ams1; do
  spoke_port=$((spoke_port + 1))
  spoke_ip=$((spoke_ip + 1))
  mkdir -p "$state/$name"
  cat > "$state/$name/spoke.toml" <<TOML
# Written by scripts/run-local.sh: a spoke on loopback.
name = "$name"
state_dir = "$state/$name/state"

[api]
listen = "127.0.0.$spoke_ip:$spoke_port"
plain_http = true
shutdown_grace_secs = 5

[metrics]
listen = "127.0.0.$spoke_ip:$metrics_port"

[hub]
api_url = "http://127.0.0.1:$port"
tunnel_addr = "127.0.0.1:$tunnel_port"
TOML
  token=""
  if [ ! -s "$state/$name/state/spoke-cert.pem" ]; then
    token=$("$hub_bin" --config "$state/hub.toml" spoke add "$name" --public-addr "127.0.0.$spoke_ip/32" 2>/dev/null)
  fi
  FERRY_JOIN_TOKEN=$token "$spoke_bin" --config "$state/$name/spoke.toml" 2> "$state/$name/spoke.log" &
  pids+=($!)
  wait_ready "spoke $name" "http://127.0.0.$spoke_ip:$spoke_port" "$state/$name/spoke.log"
done

api=http://127.0.0.1:$port
cat <<TXT

ferry is running on loopback:
  hub          $api   (log: $state/hub.log, data: $state/data)
  spoke fra1   http://127.0.0.2:$((port + 1))   (log: $state/fra1/spoke.log)
  spoke ams1   http://127.0.0.3:$((port + 2))   (log: $state/ams1/spoke.log)
  console      $api/console   (sign in with \$ADMIN below, or an account's API key)
  steering DNS 127.0.0.1 port $dns_port, zone ferry.local
  metrics      http://127.0.0.1:$metrics_port/metrics (hub), 127.0.0.2 and
               127.0.0.3 on the same port (spokes); never on the API's port

Every node answers the same API. Try it through spoke fra1 (copy and paste):

  export FERRY=http://127.0.0.2:$((port + 1))
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
  curl -s http://127.0.0.2:$metrics_port/metrics | head

  # a file changed outside ferry: the hub watches the folder, and within a
  # second the feed has it, with "origin":"provider"
  echo 'written directly' > $state/data/demo/outside.txt
  sleep 1; curl -s -H "Authorization: Bearer \$KEY" "\$FERRY/v1/events?cursor=s1"

  # a resumable upload (tus 1.0): begun through fra1, finished through ams1
  U=\$(curl -s -D - -o /dev/null -X POST "\$FERRY/v1/connections/local/uploads?path=notes/hello.txt" \\
       -H "Authorization: Bearer \$KEY" -H 'tus-resumable: 1.0.0' -H 'upload-length: 11' \\
       | tr -d '\r' | sed -n 's/^location: //p')
  curl -s -X PATCH \$FERRY\$U -H "Authorization: Bearer \$KEY" -H 'tus-resumable: 1.0.0' \\
       -H 'content-type: application/offset+octet-stream' -H 'upload-offset: 0' --data-binary 'hello '
  curl -s -I -H "Authorization: Bearer \$KEY" -H 'tus-resumable: 1.0.0' http://127.0.0.3:$((port + 2))\$U | grep upload-offset
  curl -s -X PATCH http://127.0.0.3:$((port + 2))\$U -H "Authorization: Bearer \$KEY" -H 'tus-resumable: 1.0.0' \\
       -H 'content-type: application/offset+octet-stream' -H 'upload-offset: 6' --data-binary 'world'
  curl -s -H "Authorization: Bearer \$KEY" \$FERRY/v1/connections/local/files/notes/hello.txt

  # S3: a key for S3 clients, then any of them against any node's API port
  # (here the AWS CLI, if you have it; buckets are your connections); at a
  # spoke, objects stream there, listings go to the hub
  S3=\$(curl -s -X POST $api/v1/s3-keys -H "Authorization: Bearer \$KEY")
  export AWS_ACCESS_KEY_ID=\$(echo "\$S3" | sed -E 's/.*"access_key_id":"([^"]+)".*/\1/')
  export AWS_SECRET_ACCESS_KEY=\$(echo "\$S3" | sed -E 's/.*"secret_access_key":"([^"]+)".*/\1/')
  aws --endpoint-url \$FERRY --region us-east-1 s3 cp README.md s3://local/s3/README.md
  aws --endpoint-url $api --region us-east-1 s3 ls --recursive s3://local/

  # the same file through the other spoke and through the hub
  curl -s -H "Authorization: Bearer \$KEY" http://127.0.0.3:$((port + 2))/v1/connections/local/files/docs/README.md | head -3
  curl -s -H "Authorization: Bearer \$ADMIN" $api/v1/spokes

  # steering: the spokes measure your connections, so api.ferry.local sends
  # you to one of them; report probe times that make ams1 (127.0.0.3) far
  # faster for your network, and the answer moves there
  dig @127.0.0.1 -p $dns_port api.ferry.local +short
  curl -s -H "Authorization: Bearer \$KEY" \$FERRY/v1/spokes/probe-targets
  curl -s -X POST \$FERRY/v1/steering/reports -H "Authorization: Bearer \$KEY" \\
       -H 'content-type: application/json' -d '{"samples":[{"spoke":"ams1","rtt_ms":1},{"spoke":"fra1","rtt_ms":500}]}'
  dig @127.0.0.1 -p $dns_port api.ferry.local +short
  curl -s -H "Authorization: Bearer \$ADMIN" "$api/v1/steering?client=127.0.0.1"

  # the ferry command: probes the spokes, reports to the hub, copies through
  # the nearest one, resuming (docs/client.md)
  export FERRY_URL=$api FERRY_API_KEY=\$KEY
  $ferry_bin spokes
  $ferry_bin cp README.md local:docs/README-copy.md
  $ferry_bin ls -r --long local:
  $ferry_bin cp local:docs/README-copy.md /tmp/

Press Ctrl-C to stop.
TXT
wait
