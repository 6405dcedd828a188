#!/usr/bin/env bash
# Builds the ferry-hub, ferry-spoke and ferry (the client command) Debian
# packages with dpkg-deb.
#
#   ./scripts/build-deb.sh                    release build, packages in target/debian/
#   ./scripts/build-deb.sh --profile debug    package the debug binaries (what the tests do)
#   ./scripts/build-deb.sh --out DIR          write the .debs to DIR
#   ./scripts/build-deb.sh --no-build         package binaries already built
#   ./scripts/build-deb.sh --compress none    dpkg-deb's compressor (default xz)
#
# The ferry package installs the command and its documentation only. Each
# daemon's package installs its binary in /usr/bin, its systemd unit, example
# configurations under /etc/ferry/ (conffiles), its documentation, and on
# install a system user (ferry, ferry-spoke). The unit is enabled, and
# started only once /etc/ferry/hub.toml (spoke.toml) exists.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
profile=release
out="$root/target/debian"
build=1
compress=xz
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --compress) compress=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
case "$profile" in
  release) flag=--release; dir=release ;;
  debug) flag=; dir=debug ;;
  *) echo "--profile is release or debug" >&2; exit 2 ;;
esac
target_dir=${CARGO_TARGET_DIR:-$root/target}
if [ "$build" -eq 1 ]; then
  # The console the hub embeds is bundled from its npm packages.
  "$root/scripts/console-packages.sh"
  (cd "$root" && cargo build $flag -p ferry-hub -p ferry-spoke -p ferry-client --bins)
fi
version=$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version = "\(.*\)"/\1/p' "$root/Cargo.toml")
arch=$(dpkg --print-architecture)
mkdir -p "$out"

# The machine-readable copyright file every package carries.
copyright() {
  cat <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ferry
License: Apache-2.0

Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
EOF
}

# control STAGE NAME DEPENDS SUMMARY: writes STAGE/DEBIAN/control, the
# long description (lines starting with a space) read from standard input.
control() {
  local stage=$1 name=$2 depends=$3 summary=$4 size
  mkdir -p "$stage/DEBIAN"
  size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
  {
    cat <<EOF
Package: $name
Version: $version
Architecture: $arch
Maintainer: ferry maintainers <ferry@example.org>
Section: net
Priority: optional
Installed-Size: $size
Depends: $depends
Homepage: https://example.org/ferry
Description: $summary
EOF
    cat
  } > "$stage/DEBIAN/control"
}

# build STAGE NAME: makes NAME_VERSION_ARCH.deb of STAGE and prints its path.
build() {
  local deb="$out/${2}_${version}_${arch}.deb"
  dpkg-deb --root-owner-group -Z"$compress" --build "$1" "$deb" >/dev/null
  echo "$deb"
}

# package NAME USER CONFIG... : builds NAME_VERSION_ARCH.deb
package() {
  local name=$1 user=$2 home=$3 description=$4
  shift 4
  local stage
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' RETURN
  install -D -m 0755 "$target_dir/$dir/$name" "$stage/usr/bin/$name"
  install -D -m 0644 "$root/systemd/$name.service" "$stage/lib/systemd/system/$name.service"
  local conffiles=()
  for cfg in "$@"; do
    install -D -m 0644 "$root/config/$cfg" "$stage/etc/ferry/$cfg"
    conffiles+=("/etc/ferry/$cfg")
  done
  local doc="$stage/usr/share/doc/$name"
  install -D -m 0644 "$root/README.md" "$doc/README.md"
  for f in operations.md metrics.md architecture.md multi-region.md steering.md providers.md api.md; do
    install -D -m 0644 "$root/docs/$f" "$doc/$f"
  done
  install -D -m 0644 "$root/config/prometheus/ferry-alerts.yml" "$doc/examples/prometheus/ferry-alerts.yml"
  install -D -m 0644 "$root/config/prometheus/ferry-alerts.test.yml" "$doc/examples/prometheus/ferry-alerts.test.yml"
  if [ -d "$root/config/grafana" ]; then
    for f in "$root"/config/grafana/*; do
      install -D -m 0644 "$f" "$doc/examples/grafana/$(basename "$f")"
    done
  fi
  copyright > "$doc/copyright"
  control "$stage" "$name" "adduser, libc6 (>= 2.34)" "$description" <<EOF
 ferry moves files between applications and cloud storage through a
 hub-and-spoke edge network: hubs hold the metadata and steer clients by
 DNS, spokes near the clients stream content with the storage providers.
EOF
  printf '%s\n' "${conffiles[@]}" > "$stage/DEBIAN/conffiles"
  local cfg_main=${name#ferry-}.toml
  cat > "$stage/DEBIAN/postinst" <<EOF
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
  if ! getent passwd $user >/dev/null; then
    adduser --system --group --home $home --no-create-home --gecos "ferry" $user >/dev/null
  fi
  if command -v deb-systemd-helper >/dev/null; then
    deb-systemd-helper enable $name.service >/dev/null || true
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null || true
    if [ -e /etc/ferry/$cfg_main ]; then
      systemctl try-restart $name.service >/dev/null || systemctl start $name.service || true
    else
      echo "$name: write /etc/ferry/$cfg_main (see /etc/ferry/*.example.toml), then: systemctl start $name"
    fi
  fi
fi
exit 0
EOF
  cat > "$stage/DEBIAN/prerm" <<EOF
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "\$1" = remove ]; then
  systemctl stop $name.service >/dev/null || true
fi
exit 0
EOF
  cat > "$stage/DEBIAN/postrm" <<EOF
#!/bin/sh
set -e
if [ "\$1" = purge ] && command -v deb-systemd-helper >/dev/null; then
  deb-systemd-helper purge $name.service >/dev/null || true
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
exit 0
EOF
  chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"
  build "$stage" "$name"
}

package ferry-hub ferry /var/lib/ferry "ferry hub: API, metadata, tunnels and steering DNS" \
  hub.example.toml hub-region.example.toml
package ferry-spoke ferry-spoke /var/lib/ferry-spoke "ferry spoke: the edge daemon near clients" \
  spoke.example.toml

# The client: the command and its documentation, no service, no user.
package_client() {
  local stage
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' RETURN
  install -D -m 0755 "$target_dir/$dir/ferry" "$stage/usr/bin/ferry"
  local doc="$stage/usr/share/doc/ferry"
  install -D -m 0644 "$root/README.md" "$doc/README.md"
  install -D -m 0644 "$root/docs/client.md" "$doc/client.md"
  # Completions and the manual page, as the command itself writes them.
  local bin="$target_dir/$dir/ferry"
  mkdir -p "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" \
    "$stage/usr/share/fish/vendor_completions.d" "$stage/usr/share/man/man1"
  "$bin" completions bash > "$stage/usr/share/bash-completion/completions/ferry"
  "$bin" completions zsh > "$stage/usr/share/zsh/vendor-completions/_ferry"
  "$bin" completions fish > "$stage/usr/share/fish/vendor_completions.d/ferry.fish"
  "$bin" man --out "$stage/usr/share/man/man1"
  gzip -9n "$stage/usr/share/man/man1/"*.1
  copyright > "$doc/copyright"
  control "$stage" ferry "libc6 (>= 2.34)" \
    "ferry client: copy and sync files through the nearest spoke" <<TXT
 The ferry command moves files between a computer and the storage behind
 a ferry network: it finds the nearest spoke, resumes transfers, moves to
 another spoke when one fails and checks every file end to end.
TXT
  build "$stage" ferry
}

package_client
