#!/usr/bin/env bash
# Installs what `make test-container` needs, each piece only when missing: Debian's podman and
# buildah with runc, netavark, aardvark-dns and catatonit (tests/container/containers.conf says why those),
# and debootstrap for the stand-in base images. podman-compose and hadolint come from
# requirements-dev.txt. No host setting is changed: the test points podman at its own
# containers.conf through CONTAINERS_CONF.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/bin/podman ] || need_apt+=(podman)
[ -x /usr/bin/buildah ] || need_apt+=(buildah)
[ -x /usr/sbin/runc ] || need_apt+=(runc)
[ -x /usr/lib/podman/netavark ] || [ -x /usr/bin/netavark ] || need_apt+=(netavark)
[ -x /usr/lib/podman/aardvark-dns ] || [ -x /usr/bin/aardvark-dns ] || need_apt+=(aardvark-dns)
# compose's `init: true` runs catatonit as the container's PID 1.
[ -x /usr/libexec/podman/catatonit ] || need_apt+=(catatonit)
[ -x /usr/sbin/debootstrap ] || need_apt+=(debootstrap)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "Missing Debian packages: ${need_apt[*]}. Install them: sudo apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
  echo "Installing Debian packages: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
