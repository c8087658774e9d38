#!/usr/bin/env bash
# cxlrig set-up: installs what a fresh Debian 12 machine lacks, creates the
# virtualenv, fetches the QEMU plugin header, then checks the result.
# Idempotent: a second run with nothing to do takes a few seconds, because
# every step first looks whether its result is already there.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache=${CXLRIG_CACHE:-$HOME/.cache/cxlrig}
venv=${CXLRIG_VENV:-$here/.venv}
mkdir -p "$cache"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 2; }

# Packages from bookworm (and bookworm-security for linux-source-6.12).
base_pkgs=(
  linux-source-6.12 bc bison flex libelf-dev libssl-dev cpio xz-utils make gcc
  busybox-static ndctl daxctl numactl libglib2.0-dev pkg-config dpkg-dev
  python3-venv chromium gcc-multilib libnuma-dev
)
# QEMU 10 only exists in bookworm-backports (bookworm has 7.2, without
# volatile type-3 devices).
backport_pkgs=(qemu-system-x86 qemu-system-data)

apt_sources=/etc/apt/sources.list.d/cxlrig.sources
want_sources=$(cat <<'EOF'
# Added by cxlrig set-up: QEMU 10 comes from bookworm-backports; the plugin
# API header comes from QEMU's source package (trixie carries the same 10.0
# plugin API and its source package downloads whole).
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
)

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO=sudo; else die "installing packages needs root (or sudo)"; fi
  else
    SUDO=
  fi
}

qemu_major() {
  qemu-system-x86_64 --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\)\..*/\1/p'
}

missing_pkgs() {
  local p
  for p in "${base_pkgs[@]}" "${backport_pkgs[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
  done
}

# ---- 1. apt packages -------------------------------------------------------
sources_changed=0
if [ ! -f "$apt_sources" ] || [ "$(cat "$apt_sources")" != "$want_sources" ]; then
  need_root
  say "adding bookworm-backports and QEMU's deb-src to apt's sources"
  printf '%s\n' "$want_sources" | $SUDO tee "$apt_sources" >/dev/null
  sources_changed=1
fi
missing=$(missing_pkgs)
major=$(qemu_major || true)
if [ -n "$missing" ] || [ "${major:-0}" -lt 10 ] || [ "$sources_changed" = 1 ]; then
  need_root
  say "installing: ${missing//$'\n'/ } (this takes a few minutes once)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${base_pkgs[@]}" >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    -t bookworm-backports "${backport_pkgs[@]}" >/dev/null
fi

# ---- 2. QEMU plugin header -------------------------------------------------
# Only include/qemu/qemu-plugin.h is needed to build a plugin; QEMU 10.0.x has
# plugin API version 4 in every Debian revision. The source tarball is kept so
# that the benchmarks can build QEMU's own plugins from it (tests/tcg/plugins
# /mem.c also wants compiler.h and bswap.h).
qsrc="$cache/qemu-src"
wanted=(include/qemu/qemu-plugin.h include/qemu/compiler.h include/qemu/bswap.h
        contrib/plugins tests/tcg/plugins VERSION)
missing=0
for f in "${wanted[@]}"; do [ -e "$qsrc/$f" ] || missing=1; done
if [ "$missing" = 1 ]; then
  orig=$(find "$qsrc/dl" -name 'qemu_*.orig.tar.*' -print -quit 2>/dev/null || true)
  if [ -z "$orig" ]; then
    say "downloading QEMU's source package for the plugin header"
    mkdir -p "$qsrc/dl"
    chmod 755 "$qsrc" "$qsrc/dl"
    (cd "$qsrc/dl" && apt-get source --download-only -qq 'qemu/trixie' >/dev/null) \
      || die "could not download QEMU's source package (apt-get source qemu/trixie)"
    # Drop the Debian parts: only the orig tarball is kept.
    rm -f "$qsrc"/dl/*.debian.tar.* "$qsrc"/dl/*.dsc
    orig=$(find "$qsrc/dl" -name 'qemu_*.orig.tar.*' -print -quit)
    [ -n "$orig" ] || die "no QEMU orig tarball in $qsrc/dl"
  fi
  top=$( { tar -tf "$orig" || true; } | sed -n '1s,/.*,,p')
  tar -xf "$orig" -C "$qsrc" --strip-components=1 "${wanted[@]/#/$top/}"
fi

# ---- 3. Python virtualenv --------------------------------------------------
stamp="$venv/.cxlrig-stamp"
want_stamp=$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want_stamp" ]; then
  say "creating the virtualenv in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
  "$venv/bin/pip" install -q -e "$here[dev]"
  echo "$want_stamp" > "$stamp"
fi

# ---- 4. Check what was installed -------------------------------------------
major=$(qemu_major || true)
[ "${major:-0}" -ge 10 ] || die "QEMU 10 or newer is needed, found: $(qemu-system-x86_64 --version 2>&1 | head -n1)"
[ -f /usr/src/linux-source-6.12.tar.xz ] || die "linux-source-6.12 did not install /usr/src/linux-source-6.12.tar.xz"
[ -f "$qsrc/include/qemu/qemu-plugin.h" ] || die "the QEMU plugin header is missing under $qsrc"
"$venv/bin/cxlrig" doctor --quiet || die "cxlrig doctor found a missing prerequisite (run '$venv/bin/cxlrig doctor')"
say "ready"
