#!/bin/sh
# Start sequence of the Oyster image (the same script runs outside Docker: tests call it).
#
#   web     migrate, create the first admin, write the registry service account into the
#           htpasswd file (when REGISTRY_PASSWORD is set), then serve with gunicorn
#   worker  wait until the web container has migrated, then run background jobs
#   all     web and a restarting worker in one container, for hosts that run one container
#           per app and need it to answer HTTP (a single Azure App Service instance)
#   other   run as given, e.g. `python manage.py createsuperuser`
#
# Nothing secret lives in the image: every setting comes from the environment (see .env.example).
set -eu
cd "$(dirname "$0")/.."

serve() {
  # exec: gunicorn becomes PID 1 and receives the container's SIGTERM for a graceful stop.
  exec gunicorn portal.wsgi:application \
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

prepare() {
  # The SQLite default lives in DATA_DIR; a fresh host or volume may not have it yet.
  if [ -n "${DATA_DIR:-}" ]; then mkdir -p "$DATA_DIR"; fi
  python manage.py migrate --noinput
  python manage.py ensure_admin
  if [ -n "${REGISTRY_PASSWORD:-}" ]; then
    python manage.py ensure_service_account
  else
    echo "REGISTRY_PASSWORD is empty: not writing a service account; the portal cannot call the registry." >&2
  fi
  if [ "${REGISTRY_AUTH_MODE:-htpasswd}" = token ] && [ -n "${TOKEN_CERT_OUT:-}" ]; then
    # Token mode: the signing key is made on first use; its certificate goes where the registry
    # reads its rootcertbundle (a volume the registry mounts read-only; never the key itself).
    python manage.py registry_config --auth token --url "${TOKEN_REALM_URL:-http://localhost:8000}" \
      --hide-token --cert-out "$TOKEN_CERT_OUT" >/dev/null
  fi
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
    serve
    ;;
  worker)
    wait_for_migrations
    exec python manage.py run_worker
    ;;
  all)
    prepare
    # The worker restarts after a crash so the portal never serves on without one.
    (
      while true; do
        python manage.py run_worker || echo "run_worker exited with $?; restarting in 5 s" >&2
        sleep 5
      done
    ) &
    serve
    ;;
  *)
    exec "$@"
    ;;
esac
