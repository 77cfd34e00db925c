# Oyster: the portal (web) and its background worker from one image.
#   docker build -t oyster .                                # podman: add --format docker
#   docker run --env-file .env -p 8000:8000 oyster          # web (the default command)
#   docker run --env-file .env oyster worker                # background jobs
# The start sequence lives in docker/entrypoint.sh; every setting comes from the environment.
# podman builds OCI images by default and drops HEALTHCHECK from them; `--format docker` keeps it.

# The registry's own binary, for its garbage collector (`registry garbage-collect`), run by the
# portal against the registry's storage. Static, so it runs on the Debian base below.
FROM registry:2.8.3 AS registry

# --- build: the pinned dependencies in a virtualenv, copied whole into the runtime stage ---
FROM python:3.11.13-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
# Out of the runtime, never used there (bench/README.md has the sizes): pip and setuptools,
# which only install; and the message catalogs of other languages than English (Django's and
# its apps'), because the portal is English only (LANGUAGE_CODE en-us, no LocaleMiddleware).
RUN /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt \
 && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools \
 && find /opt/venv/lib -type d -path "*/site-packages/*/locale/*" ! -path "*/locale/*/*" \
      ! -name en ! -name "en_*" -prune -exec rm -rf {} +

# --- runtime ---
FROM python:3.11.13-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DATA_DIR=/data \
    HTPASSWD_PATH=/auth/htpasswd \
    PORT=8000

# A fixed uid so volume ownership survives image rebuilds. The code stays root-owned and
# read-only for the portal; only /data (SQLite, generated files) and /auth (the htpasswd file
# shared with the registry) are writable.
RUN groupadd --system --gid 10001 oyster \
 && useradd --system --uid 10001 --gid oyster --home-dir /data --shell /usr/sbin/nologin oyster \
 && mkdir -p /data /auth \
 && chown oyster:oyster /data /auth

COPY --from=registry /bin/registry /usr/local/bin/registry
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY . /app

# Hashed, compressed static files at build time. Settings refuse to load without SECRET_KEY,
# so this one command gets a throwaway value that exists only for its duration.
RUN SECRET_KEY=collectstatic-build-only-not-a-secret python manage.py collectstatic --noinput \
 && chmod 0755 /app/docker/entrypoint.sh

# Numeric, so a runtime that cannot read /etc/passwd (or a Kubernetes runAsNonRoot check) still
# knows the image does not run as root.
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/app/docker/healthcheck.py"]
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["web"]
