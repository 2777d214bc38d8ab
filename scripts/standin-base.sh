#!/usr/bin/env bash
# Builds a local stand-in for the python:3.12-slim base image, for machines that cannot reach a
# container registry: a Debian bookworm minbase root file system with Python and the CA store,
# imported as an image. Debian's Python is 3.11, so the wheels for it must be built for 3.11
# (make image PYTHON_VERSION=3.11). An existing image is reused: debootstrap takes about a minute.
#
# usage: scripts/standin-base.sh [IMAGE]   (default localhost/deepseek-sidecar-standin:bookworm)
set -euo pipefail

image=${1:-localhost/deepseek-sidecar-standin:bookworm}

if podman image exists "$image"; then
  echo "standin-base: $image exists, reusing it"
  exit 0
fi

# The machine's own Debian mirror, so the stand-in is built from the same archive apt uses.
mirror=""
if [ -r /etc/apt/sources.list.d/debian.sources ]; then
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
elif [ -r /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}

rootfs=$(mktemp -d "${TMPDIR:-/var/tmp}/standin-rootfs.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT

echo "standin-base: debootstrap bookworm from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  tail -n 20 "$rootfs.log" >&2
  rm -f "$rootfs.log"
  exit 1
}
rm -f "$rootfs.log"
# Downloaded packages and apt lists are not part of a slim base.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

# Without an ENV PATH an imported image has no PATH at all and every exec form fails.
tar -C "$rootfs" -c . | podman import --quiet \
  --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV=LANG=C.UTF-8' \
  --change 'CMD=["python3"]' \
  - "$image" >/dev/null
echo "standin-base: imported $image"
