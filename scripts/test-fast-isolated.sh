#!/usr/bin/env bash
# `make test-fast` as it runs on a machine without the outside programs: inside a private mount
# namespace, /dev/null is bind-mounted over the registry, skopeo, Chromium, Node (Azurite and
# Playwright's driver run on it), podman, gunicorn and PostgreSQL, so `os.access(..., X_OK)`
# says no and starting one fails. Nothing outside this command's namespace changes: other
# processes on the machine still see the real programs.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${OYSTER_PROGRAMS_HIDDEN:-}" != 1 ]; then
  # Root may mount in a new namespace; anyone else first maps itself to root in a user namespace.
  [ "$(id -u)" -eq 0 ] && as_root=() || as_root=(--map-root-user)
  exec unshare "${as_root[@]}" --mount --propagation private \
    env OYSTER_PROGRAMS_HIDDEN=1 "$0" "$@"
fi

names=(docker-registry registry skopeo chromium chromium-browser google-chrome node nodejs
  podman gunicorn postgres pg_ctl pg_ctlcluster initdb psql)
candidates=()
for name in "${names[@]}"; do
  mapfile -t found < <(type -aP "$name" 2>/dev/null || true)
  candidates+=("${found[@]}")
done
candidates+=(
  /usr/bin/docker-registry /usr/bin/skopeo /usr/bin/chromium /usr/lib/chromium/chromium
  /usr/bin/podman node_modules/.bin/azurite-blob .venv/bin/gunicorn
  .venv/lib/python3*/site-packages/playwright/driver/node
  /usr/lib/postgresql/*/bin/postgres /usr/lib/postgresql/*/bin/initdb
)

hidden=()
for path in "${candidates[@]}"; do
  [ -e "$path" ] || continue
  real=$(readlink -f "$path")
  [ -c "$real" ] && continue # already hidden (a second name for the same file)
  mount --bind /dev/null "$real"
  hidden+=("$real")
done
printf 'hidden: %s\n' "${hidden[@]}"
for name in docker-registry skopeo chromium node podman; do
  if command -v "$name" >/dev/null && [ -x "$(command -v "$name")" ]; then
    echo "$name is still reachable at $(command -v "$name")" >&2
    exit 1
  fi
done

exec make test-fast "$@"
