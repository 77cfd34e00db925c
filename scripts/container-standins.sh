#!/usr/bin/env bash
# Builds the stand-ins for the Dockerfile's base images that the container test needs, once:
# no image registry is reachable from the test machines, so `python:3.11.13-slim-bookworm` and
# `registry:2.8.3` are made locally from Debian and tagged with the official names. An image that
# carries the current stand-in label is kept, so later runs take no time here.
#
# What differs from the real bases (the test's docstring says the same):
# - python: Debian bookworm's Python 3.11.2 in /usr/bin (python-is-python3) with Debian's
#   ensurepip (pip 23), instead of Python 3.11.13 built into /usr/local/bin with pip 24.
# - registry: see tests/container/registry-standin.Containerfile.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/tests/container/containers.conf}"

VERSION=1
PYTHON_IMAGE=docker.io/library/python:3.11.13-slim-bookworm
REGISTRY_IMAGE=docker.io/library/registry:2.8.3
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

current() {
  [ "$(podman image inspect --format '{{ index .Config.Labels "org.oyster.standin" }}' "$1" 2>/dev/null)" = "$VERSION" ]
}

if ! current "$PYTHON_IMAGE"; then
  rootfs="$(mktemp -d /var/tmp/oyster-standin-rootfs.XXXXXX)"
  trap 'rm -rf "$rootfs"' EXIT
  echo "Building the stand-in $PYTHON_IMAGE with debootstrap (about a minute)"
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; exit 1; }
  rm -f "$rootfs.log"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | podman import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --change "LABEL org.oyster.standin=$VERSION" \
    - "$PYTHON_IMAGE" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
fi

if ! current "$REGISTRY_IMAGE"; then
  echo "Building the stand-in $REGISTRY_IMAGE from Debian's docker-registry"
  podman build --quiet --pull=never --format docker -t "$REGISTRY_IMAGE" \
    -f tests/container/registry-standin.Containerfile tests/container >/dev/null
fi
echo "Stand-in base images ready: $PYTHON_IMAGE, $REGISTRY_IMAGE"
