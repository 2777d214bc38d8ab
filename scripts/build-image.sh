#!/usr/bin/env bash
# Builds the image from the repository root with whichever engine this machine has.
# CONTAINER_ENGINE=docker|buildah|podman picks one; otherwise the first that works, in that order
# (docker only when its daemon answers: the CLI alone is often installed without an engine).
#
# buildah and podman build with chroot isolation (BUILD_ISOLATION to change it): the default OCI
# isolation needs a cgroup layout that hosts on hybrid cgroups lack, and the build only runs pip.
#
# usage: scripts/build-image.sh TAG [--build-arg NAME=VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:?usage: scripts/build-image.sh TAG [BUILD ARGS...]}
shift
engine=${CONTAINER_ENGINE:-}
if [ -z "$engine" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    engine=docker
  else
    for candidate in buildah podman; do
      if command -v "$candidate" >/dev/null 2>&1; then
        engine=$candidate
        break
      fi
    done
  fi
fi
isolation=${BUILD_ISOLATION:-chroot}

case "$engine" in
  docker) exec docker build --tag "$tag" "$@" . ;;
  buildah) exec buildah bud --isolation "$isolation" --tag "$tag" "$@" . ;;
  podman) exec podman build --isolation "$isolation" --tag "$tag" "$@" . ;;
  "")
    echo "build-image: no docker engine answers, and neither buildah nor podman is installed" >&2
    exit 1
    ;;
  *)
    echo "build-image: unknown CONTAINER_ENGINE '$engine' (docker, buildah or podman)" >&2
    exit 1
    ;;
esac
