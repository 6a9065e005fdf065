#!/usr/bin/env bash
# Checks for libad's build dependencies and installs them with apt-get.
#   deps.sh check PKG...    install only when something is missing
#   deps.sh install PKG...  always run apt-get install
set -u
mode=$1; shift
packages="$*"

missing() {
  command -v pkg-config >/dev/null 2>&1 || return 0
  for m in openblas gsl cmocka; do
    pkg-config --exists "$m" 2>/dev/null || return 0
  done
  return 1
}

if [ "$mode" = check ] && ! missing; then
  exit 0
fi

if [ "$(id -u)" = 0 ]; then
  sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo="sudo"
else
  echo "libad needs: $packages" >&2
  echo "Run: sudo apt-get update && sudo apt-get install -y $packages" >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "libad needs OpenBLAS, GSL, cmocka and pkg-config; no apt-get here." >&2
  echo "Install them with your package manager, then rerun make." >&2
  exit 1
fi

echo "Installing libad's dependencies: $packages"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq &&
  $sudo apt-get install -y -qq $packages >/dev/null || {
  echo "Installation failed. Run: sudo apt-get install -y $packages" >&2
  exit 1
}
