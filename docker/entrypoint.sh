#!/bin/sh
# Start sequence of the Oyster image (the same script runs outside Docker: tests call it).
#
#   web     migrate, create the first admin, write the registry service account into the
#           htpasswd file (when REGISTRY_PASSWORD is set), then serve with gunicorn
#   worker  wait until the web container has migrated, then run background jobs
#   all     web and a restarting worker in one container, for hosts that run one container
#           per app and need it to answer HTTP (a single Azure App Service instance); SIGTERM
#           or SIGINT reaches both, and the script exits once both have stopped
#   other   run as given, e.g. `python manage.py createsuperuser`
#
# Nothing secret lives in the image: every setting comes from the environment (see .env.example).
set -eu
cd "$(dirname "$0")/.."

# `serve exec` (web): gunicorn replaces this shell and gets the container's SIGTERM itself, from
# the runtime or from compose's init. `serve exec &` (all): a child this shell signals itself.
serve() {
  ${1:-} gunicorn portal.wsgi:application \
    --bind "0.0.0.0:${PORT:-8000}" \
    --workers "${GUNICORN_WORKERS:-2}" \
    --threads "${GUNICORN_THREADS:-4}" \
    --timeout "${GUNICORN_TIMEOUT:-60}" \
    --graceful-timeout "${GUNICORN_TIMEOUT:-60}" \
    --worker-tmp-dir /dev/shm \
    --no-control-socket \
    --access-logfile - \
    --error-logfile -
}

check_data_dir() {
  # The SQLite default lives in DATA_DIR; a fresh host or volume may not have it yet. A bind
  # mount owned by root would otherwise end in SQLite's bare "unable to open database file".
  [ -n "${DATA_DIR:-}" ] || return 0
  if mkdir -p "$DATA_DIR" 2>/dev/null && [ -w "$DATA_DIR" ] && [ -x "$DATA_DIR" ]; then
    return 0
  fi
  echo "DATA_DIR $DATA_DIR is not writable by uid $(id -u) (gid $(id -g)); the SQLite database and generated files live there." >&2
  echo "Give it to that user (e.g. chown -R $(id -u):$(id -g) on the host folder or volume), or set DATABASE_URL and DATA_DIR to a writable place." >&2
  exit 1
}

prepare() {
  check_data_dir
  python manage.py migrate --noinput
  # The service account first: its checks (e.g. the password's length) stop the start before a
  # generated admin password is printed, and a second start would not show that password again.
  if [ -n "${REGISTRY_PASSWORD:-}" ]; then
    python manage.py ensure_service_account
  else
    echo "REGISTRY_PASSWORD is empty: not writing a service account; the portal cannot call the registry." >&2
  fi
  python manage.py ensure_admin
  if [ "${REGISTRY_AUTH_MODE:-htpasswd}" = token ] && [ -n "${TOKEN_CERT_OUT:-}" ]; then
    # Token mode: the signing key is made on first use; its certificate goes where the registry
    # reads its rootcertbundle (a volume the registry mounts read-only; never the key itself).
    python manage.py registry_config --auth token --url "${TOKEN_REALM_URL:-http://localhost:8000}" \
      --hide-token --cert-out "$TOKEN_CERT_OUT" >/dev/null
  fi
}

# `wait PID` returns early (128 + signal) when a trapped signal arrives; wait until PID is gone
# and return its own exit status.
wait_until_gone() {
  while :; do
    status=0
    wait "$1" || status=$?
    kill -0 "$1" 2>/dev/null || return "$status"
  done
}

# The worker of `all`: restarted after a crash so the portal never serves on without one;
# SIGTERM/SIGINT stop it (run_worker finishes its current job and logs "Worker stopped.").
worker_loop() {
  stopping=0
  child=
  trap 'stopping=1; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null || true' TERM INT
  while [ "$stopping" -eq 0 ]; do
    python manage.py run_worker &
    child=$!
    status=0
    wait_until_gone "$child" || status=$?
    child=
    [ "$stopping" -eq 0 ] || break
    echo "run_worker exited with $status; restarting in 5 s" >&2
    # In the background too, so a stop during the pause ends it at once.
    sleep 5 &
    child=$!
    wait_until_gone "$child" || true
    child=
  done
}

wait_for_migrations() {
  # Only the web side migrates; two processes migrating one database at once can collide.
  tries=0
  until python manage.py migrate --check >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -ge 150 ]; then
      echo "The database still has unapplied migrations after 5 minutes; is the web container running?" >&2
      python manage.py migrate --check
      exit 1
    fi
    sleep 2
  done
}

command="${1:-web}"
case "$command" in
  web)
    prepare
    serve exec
    ;;
  worker)
    wait_for_migrations
    exec python manage.py run_worker
    ;;
  all)
    prepare
    worker_loop &
    worker=$!
    serve exec &
    web=$!
    # This shell may be PID 1 (no init): without a trap it would ignore SIGTERM altogether.
    trap 'kill -TERM "$web" "$worker" 2>/dev/null || true' TERM INT
    status=0
    wait_until_gone "$web" || status=$?
    # gunicorn ended (stopped, or failed on its own): the worker goes with it.
    kill -TERM "$worker" 2>/dev/null || true
    wait_until_gone "$worker" || true
    exit "$status"
    ;;
  *)
    exec "$@"
    ;;
esac
