#!/usr/bin/env bash
# Fetch the out-of-distribution yardstick: EVALUATION ONLY (never training, recipe tuning or checkpoint choice).
#   - 8 MR slices of ITK's example data (Debian package insighttoolkit5-examples, Apache-2.0);
#   - inia19-t1-brain.nii.gz, a 0.5 mm skull-stripped macaque T1 template (Debian package mricron-data, BSD-3-Clause).
# Downloads the two .deb files with `apt-get download` (no root install: `dpkg -x` into a temporary folder),
# copies exactly the files below, checks their SHA-256 and caches them in ${MEDSR_DATA:-$HOME/.cache/medsr}/external.
# Every other file of those packages is reserved (FACTS.md): it is never extracted here.
# Idempotent: files already cached with the right hash are kept; prints the folder on success.
#   bash benchmarks/fetch_external.sh
set -euo pipefail
DEST="${MEDSR_DATA:-$HOME/.cache/medsr}/external"
ITK_DIR=usr/share/doc/insighttoolkit5-examples/examples/Data
# SHA-256 observed in insighttoolkit5-examples 5.2.1-5+deb12u1 and mricron-data 1.2.20211006+dfsg-4 (bookworm)
declare -A SHA=(
  [FatMRISlice.png]=933054fb93c2e6f06451c41bffa58667f42c2b1fa515ca30aa67280b038fa4fd
  [BrainMidSagittalSlice.png]=c22dc08de7101749c840c9cb142643bbb0f24cd3f363cc5c23ad5bbf70c33189
  [VisibleWomanHeadSlice.png]=a580fa87ed9928a497f444dd25d79a48784f7070788af82694882fce7d89c8e7
  [VisibleWomanEyeSlice.png]=150b612396001250c78a7a021579a956ba5584ff674080c4e08002bfde41c5b7
  [BrainT1Slice.png]=43f5d1bdb8130c3327dd4496568aed8c4b5ac4229e1a7d04fad412d55fd1ca18
  [BrainProtonDensitySlice256x256.png]=8e1a79bd51426f493c8e1ecba0b59270e19b7abd526c5c011e29a788474b2ebb
  [RatLungSlice1.mha]=1ec4877bc0d2fc9d177a246f87404ddc2f7130b3c62525ae04d23c507609c818
  [RatLungSlice1.raw]=181bd91b86f81c2d9649c138a2a54951b7e910bf61f4d62767da5164ea447eca
  [RatLungSlice2.mha]=83c0d7dd5e50a89f4f702d41194504b717df6da2a580a76e0b1c511780593952
  [RatLungSlice2.raw]=e1d123c10f6e85a93bf04f4205846186ddad102f7ba40d4cdce5c0b54ce3a6c8
  [inia19-t1-brain.nii.gz]=3f0707f4999a0c6b56d6c9a0145310cba17753e2b4612f577d8dbfe65a89e231
)
declare -A SRC=([inia19-t1-brain.nii.gz]=usr/share/mricron/templates/inia19-t1-brain.nii.gz)
for f in "${!SHA[@]}"; do [ -n "${SRC[$f]:-}" ] || SRC[$f]="$ITK_DIR/$f"; done

ok() { [ -f "$DEST/$1" ] && [ "$(sha256sum "$DEST/$1" | cut -d' ' -f1)" = "${SHA[$1]}" ]; }
missing=()
for f in "${!SHA[@]}"; do ok "$f" || missing+=("$f"); done
if [ ${#missing[@]} -eq 0 ]; then echo "$DEST"; exit 0; fi

command -v apt-get >/dev/null || { echo "fetch_external.sh: apt-get not found (a Debian/Ubuntu system is needed)" >&2; exit 1; }
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/x" "$DEST"
(cd "$TMP" && { apt-get download insighttoolkit5-examples mricron-data >/dev/null 2>&1 \
  || { apt-get update >/dev/null 2>&1 || true; apt-get download insighttoolkit5-examples mricron-data >/dev/null; }; }) \
  || { echo "fetch_external.sh: apt-get download insighttoolkit5-examples mricron-data failed" >&2; exit 1; }
for deb in "$TMP"/*.deb; do dpkg -x "$deb" "$TMP/x"; done
for f in "${missing[@]}"; do
  src="$TMP/x/${SRC[$f]}"
  [ -f "$src" ] || { echo "fetch_external.sh: ${SRC[$f]} not in the package" >&2; exit 1; }
  got="$(sha256sum "$src" | cut -d' ' -f1)"
  [ "$got" = "${SHA[$f]}" ] || { echo "fetch_external.sh: $f: SHA-256 $got, expected ${SHA[$f]}" >&2; exit 1; }
  cp "$src" "$DEST/.$f.part" && mv "$DEST/.$f.part" "$DEST/$f"
done
echo "$DEST"
