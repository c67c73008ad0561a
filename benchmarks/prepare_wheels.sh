#!/usr/bin/env bash
# Run on a development machine before a GPU session: puts what benchmarks/gpu_check.sh needs and the GPU
# machine lacks into two git-ignored folders that the device tool carries (`carry: [".whl", ".gpu_data"]`).
#
#   .whl/       binary wheels for the GPU image's Python 3.12 on manylinux x86_64 (no network there):
#               imbalanced-learn + sklearn-compat (part c's baseline), ml-collections (part e's config files)
#   .gpu_data/  magnetic_tile blowhole images and masks, and every 3rd defect-free image (part e), from
#               ../shared/data/magnetic_tile (which does not travel: it lies outside the checkout)
#
#   bash benchmarks/prepare_wheels.sh [--free-stride N]
set -euo pipefail
cd "$(dirname "$0")/.."
FREE_STRIDE=3
[[ "${1:-}" == "--free-stride" ]] && FREE_STRIDE=${2:?--free-stride needs a number}

WHEELS=("imbalanced-learn==0.14.2" "sklearn-compat==0.1.6" "ml-collections==1.1.0")
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .whl "${WHEELS[@]}" 2>&1 | grep -v "^WARNING: Location" || true
for w in imbalanced_learn sklearn_compat ml_collections; do
  ls .whl/${w}-*.whl >/dev/null 2>&1 || { echo "error: no wheel for $w in .whl/" >&2; exit 2; }
  [[ $(ls .whl/${w}-*.whl | wc -l) == 1 ]] || { echo "error: several versions of $w in .whl/ (keep one)" >&2; exit 2; }
done

SRC=../shared/data/magnetic_tile
if [[ -d "$SRC/images/blowhole" ]]; then
  rm -rf .gpu_data/magnetic_tile
  for kind in images masks; do mkdir -p ".gpu_data/magnetic_tile/$kind/blowhole" ".gpu_data/magnetic_tile/$kind/free"; done
  cp "$SRC"/images/blowhole/* .gpu_data/magnetic_tile/images/blowhole/
  cp "$SRC"/masks/blowhole/* .gpu_data/magnetic_tile/masks/blowhole/
  i=0
  for f in $(ls "$SRC/images/free" | sort); do
    if (( i % FREE_STRIDE == 0 )); then
      cp "$SRC/images/free/$f" .gpu_data/magnetic_tile/images/free/
      m="$SRC/masks/free/${f%.*}.png"; [[ -f "$m" ]] && cp "$m" .gpu_data/magnetic_tile/masks/free/
    fi
    i=$((i + 1))
  done
else
  echo "warning: $SRC not found: part e of gpu_check.sh will report that its data is missing" >&2
fi
du -sh .whl .gpu_data 2>/dev/null
echo "carry with the device tool: [\".whl\", \".gpu_data\"] (64 MiB at most together with the working tree)"
