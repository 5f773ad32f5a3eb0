#!/usr/bin/env bash
# Installs the Debian packages qtrain's build, tests and quickstart need, only those
# missing. Idempotent and quiet when everything is present. Run as root (or via sudo).
set -euo pipefail
pkgs=(build-essential pkg-config libopenmpi-dev openmpi-bin libopenblas-dev libpng-dev
      libturbojpeg0-dev libjpeg62-turbo-dev libinih-dev libcmocka-dev python3 python3-numpy)
# Optional extras (plots, the PyTorch CPU peer for benchmarks): QT_DEPS_EXTRA=1.
if [ "${QT_DEPS_EXTRA:-0}" = 1 ]; then
    pkgs+=(python3-matplotlib gnuplot-nox python3-torch)
fi
missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "error: deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
