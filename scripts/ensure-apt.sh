#!/usr/bin/env bash
# Install the Debian packages Keep needs, only those missing. Idempotent and quiet when
# everything is present. Usage: ensure-apt.sh PYTHON PACKAGE...
set -euo pipefail
python="$1"; shift
wanted=("$@")
# A Python that cannot make a venv (Debian's python3 without python3-venv) needs these.
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    wanted+=(python3 python3-venv python3-dev)
fi
missing=()
for pkg in "${wanted[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-apt: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
fi
echo "ensure-apt: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
