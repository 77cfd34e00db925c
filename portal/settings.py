"""Oyster settings.

Every value comes from the environment through django-environ; `.env.example` documents each one
with its default. Sanity checks on values live in `registry_admin/checks.py` as system checks, so
a misconfiguration is reported with a sentence that says what to set.
"""

import re
import secrets
import shutil
import sys
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.FileAwareEnv()
# A `.env` beside manage.py is read if present; real environment variables win over it.
if (BASE_DIR / ".env").is_file():
    env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)


def _path(name, default):
    """A path setting; empty means the default, and a relative path is taken from BASE_DIR."""
    value = env(name, default="") or str(default)
    return (BASE_DIR / Path(value).expanduser()).resolve()


DATA_DIR = _path("DATA_DIR", BASE_DIR / "data")


def _local_secret_key():
    """The key kept in DATA_DIR for the local run, created on first use so sessions survive restarts."""
    path = DATA_DIR / "secret_key"
    if path.is_file():
        return path.read_text().strip()
    if not DEBUG and not env.bool("LOCAL_RUN", default=False):
        return ""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    path.touch(mode=0o600)
    path.write_text(key)
    return key


SECRET_KEY = env("SECRET_KEY", default="") or _local_secret_key()
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "Set SECRET_KEY to a long random string (for example the output of "
        "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`)."
    )

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "axes",
    "rest_framework",
    "drf_spectacular",
    "registry_admin",
]

MIDDLEWARE = [
    # First, so its headers reach every response, the other middleware's own answers included.
    "registry_admin.middleware.SecurityHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # APP_SERVICE_AUTH: the person App Service signed in; does nothing when it is off.
    "registry_admin.middleware.AppServiceAuthMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "registry_admin.middleware.RoleRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: it throttles failed logins.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "registry_admin.context_processors.portal",
            ],
        },
    },
]

WSGI_APPLICATION = "portal.wsgi.application"

DATABASES = {
    "default": env.db_url_config(
        env("DATABASE_URL", default="") or f"sqlite:///{DATA_DIR / 'oyster.sqlite3'}"
    ),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets page reads run while the webhook or the worker writes; IMMEDIATE transactions
    # take the write lock up front, so concurrent writers wait (timeout) instead of failing.
    # A checkpoint every 4,000 WAL pages (16 MB) instead of SQLite's 1,000: each stored event
    # rewrites the same few index pages, which a checkpoint then copies once for 4x as many
    # events, and whichever commit crosses the mark (often a webhook request) waits for it
    # (bench/README.md: 0.41 -> 0.45 of the no-op rate with one sender).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": env.int("SQLITE_TIMEOUT", default=20),
            "transaction_mode": "IMMEDIATE",
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                "PRAGMA wal_autocheckpoint=4000;"
            ),
        }
    )
else:
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # The webhook's INSERT is prepared on each connection after psycopg's usual 5 runs, so
    # PostgreSQL plans it once per connection instead of once per delivery (bench/README.md).
    # Django's own queries bind client-side and are never prepared. Off behind a pooler that
    # does not keep prepared statements (PgBouncer in transaction mode before 1.21, or with
    # max_prepared_statements = 0); a failure of that kind also turns them off by itself.
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = (
        5 if env.bool("DATABASE_PREPARED_STATEMENTS", default=True) else None
    )
# Reused connections. On SQLite too: closing the last connection to a WAL database checkpoints
# and removes the WAL, which made every webhook request several times slower (bench/README.md).
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    # Django's ModelBackend, which LOCAL_LOGIN=0 limits to the break-glass admin.
    "registry_admin.accounts.PasswordBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "registry_admin:dashboard"
LOGOUT_REDIRECT_URL = "login"

# Failed-login throttling (django-axes): lock a username+address pair after N failures.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("LOGIN_COOLOFF_MINUTES", default=15) / 60
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_USERNAME_CALLABLE = "registry_admin.accounts.throttling_username"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# Proxies in front of the portal that each append to X-Forwarded-For (Azure App Service: 1).
PROXY_COUNT = env.int("PROXY_COUNT", default=0)
AXES_CLIENT_IP_CALLABLE = "registry_admin.accounts.client_ip"
AXES_VERBOSE = False
# Failed logins from one address under any user names within the cool-off before it gets no more
# password checks (each costs a hash); 0 turns the address limit off.
LOGIN_ADDRESS_FAILURE_LIMIT = env.int("LOGIN_ADDRESS_FAILURE_LIMIT", default=10)
# Password checks one portal process runs at once, and seconds a login waits for its turn.
LOGIN_CONCURRENCY = env.int("LOGIN_CONCURRENCY", default=1)
LOGIN_QUEUE_SECONDS = env.float("LOGIN_QUEUE_SECONDS", default=0.3)

# --- Signing in with the organisation's identity (README: Signing in) ---
# OpenID Connect: the provider's issuer URL (its discovery document is read from
# <issuer>/.well-known/openid-configuration), the portal's client at the provider, and the claim
# whose values name a role: OIDC_ROLE_MAP is `claim-value=role` pairs, comma-separated, e.g.
# `oyster-admins=admin,oyster-readers=viewer`. A sign-in whose claim names no mapped value is
# refused; the role is set again at every sign-in.
OIDC_ISSUER = env("OIDC_ISSUER", default="").strip().rstrip("/")
OIDC_CLIENT_ID = env("OIDC_CLIENT_ID", default="")
OIDC_CLIENT_SECRET = env("OIDC_CLIENT_SECRET", default="")
OIDC_SCOPES = env("OIDC_SCOPES", default="openid profile email")
OIDC_PROVIDER_NAME = env("OIDC_PROVIDER_NAME", default="your organisation")
OIDC_USERNAME_CLAIM = env("OIDC_USERNAME_CLAIM", default="preferred_username")
OIDC_ROLE_CLAIM = env("OIDC_ROLE_CLAIM", default="groups")
OIDC_ROLE_MAP_TEXT = env("OIDC_ROLE_MAP", default="")
# Seconds to connect to and to hear back from the provider (discovery, keys, token exchange).
OIDC_TIMEOUT = env.float("OIDC_TIMEOUT", default=5.0)
# Azure App Service authentication ("Easy Auth"): the user from X-MS-CLIENT-PRINCIPAL, only on
# requests that came through PROXY_COUNT proxies (the same claim and map).
APP_SERVICE_AUTH = env.bool("APP_SERVICE_AUTH", default=False)
# Password login for portal accounts; off (0), only the break-glass admin named below may use it.
LOCAL_LOGIN = env.bool("LOCAL_LOGIN", default=True)
LOCAL_LOGIN_BREAK_GLASS = env("LOCAL_LOGIN_BREAK_GLASS", default="").strip()


def _role_map(text):
    """`oyster-admins=admin,oyster-readers=viewer` as a dict; the value is what follows the last
    `=`, so claim values holding one (an LDAP DN) still work."""
    mapping = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        value, sep, role = pair.rpartition("=")
        value, role = value.strip(), role.strip().lower()
        if not sep or not value or role not in ("admin", "viewer"):
            raise ImproperlyConfigured(
                f"OIDC_ROLE_MAP: {pair[:80]!r} is not `claim-value=role` with a role of admin or "
                "viewer; write e.g. OIDC_ROLE_MAP=oyster-admins=admin,oyster-readers=viewer."
            )
        mapping[value] = role
    return mapping


OIDC_ROLE_MAP = _role_map(OIDC_ROLE_MAP_TEXT)
if not 0.5 <= OIDC_TIMEOUT <= 60:
    raise ImproperlyConfigured(f"OIDC_TIMEOUT={OIDC_TIMEOUT}: write 0.5 to 60 seconds.")

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# collectstatic writes here (the image collects at build time); whitenoise serves it.
STATIC_ROOT = _path("STATIC_ROOT", BASE_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Tests and `make run` serve static files straight from the finders, no collectstatic needed.
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=DEBUG)
WHITENOISE_AUTOREFRESH = DEBUG

# --- Security. Secure by default when DEBUG is off; each can be turned off for plain HTTP. ---
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# `check --deploy` asks for HSTS preload, which commits the whole parent domain to HTTPS in
# browsers for months and is not ours to decide for a portal on one subdomain: opt-in only.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
# TLS terminated by a front end (Azure App Service, a reverse proxy) arrives as X-Forwarded-Proto.
# Off by default: a client reaching gunicorn directly could claim HTTPS with the header.
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Never redirected to HTTPS: container health probes speak plain HTTP on the private port, and
# the registry counts a 3xx answer to a notification as delivered, so a redirect would silently
# drop events (its token has already crossed the wire by then; redirecting protects nothing).
# /metrics likewise: a scraper inside the network asks over plain HTTP, and its token would
# already have crossed the wire.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^api/registry/events$", r"^metrics$"]
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Bodies above this are refused before parsing; the webhook has its own limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=2 * 1024 * 1024)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 5000

# --- The registry ---
REGISTRY_URL = (env("REGISTRY_URL", default="") or "http://127.0.0.1:5000").rstrip("/")
REGISTRY_USERNAME = env("REGISTRY_USERNAME", default="oyster")
REGISTRY_PASSWORD = env("REGISTRY_PASSWORD", default="")
REGISTRY_PUBLIC_HOST = env("REGISTRY_PUBLIC_HOST", default="")
REGISTRY_VERIFY_TLS = env.bool("REGISTRY_VERIFY_TLS", default=True)
REGISTRY_CA_BUNDLE = env("REGISTRY_CA_BUNDLE", default="")
# Host names besides REGISTRY_URL's that may receive the service account's credentials when the
# registry's `WWW-Authenticate: Bearer realm=` names them (a separate token server).
REGISTRY_TOKEN_REALM_HOSTS = env.list("REGISTRY_TOKEN_REALM_HOSTS", default=[])
REGISTRY_TIMEOUT = env.float("REGISTRY_TIMEOUT", default=10.0)
REGISTRY_CONNECT_TIMEOUT = env.float(
    "REGISTRY_CONNECT_TIMEOUT", default=min(3.05, REGISTRY_TIMEOUT)
)

# --- The htpasswd file shared with the registry ---
HTPASSWD_PATH = str(_path("HTPASSWD_PATH", DATA_DIR / "htpasswd"))
HTPASSWD_BCRYPT_ROUNDS = env.int("HTPASSWD_BCRYPT_ROUNDS", default=10)
HTPASSWD_SERVICE_BCRYPT_ROUNDS = env.int("HTPASSWD_SERVICE_BCRYPT_ROUNDS", default=4)
HTPASSWD_MIN_PASSWORD_LENGTH = env.int("HTPASSWD_MIN_PASSWORD_LENGTH", default=12)

# --- The portal as the registry's token server (REGISTRY_AUTH_MODE=token) ---
# `htpasswd`: the registry checks the htpasswd file itself (bcrypt on every request).
# `token`: the registry sends clients to the portal's /auth/token, which checks the password once
# and hands out a short-lived token limited to what the access rules allow.
REGISTRY_AUTH_MODE = env("REGISTRY_AUTH_MODE", default="htpasswd").strip().lower()
# The registry's `auth.token.service` and `auth.token.issuer`: tokens name both, and the registry
# refuses tokens for another service or from another issuer.
TOKEN_SERVICE = env("TOKEN_SERVICE", default="oyster-registry")
TOKEN_ISSUER = env("TOKEN_ISSUER", default="oyster")
# Seconds a token is valid. Clients fetch one per image operation, so a short life costs little.
TOKEN_LIFETIME = env.int("TOKEN_LIFETIME", default=300)
# Where the portal keeps the signing key it generates (and its certificate, the registry's
# rootcertbundle). Every portal instance must see the same directory.
TOKEN_KEY_DIR = str(_path("TOKEN_KEY_DIR", DATA_DIR / "token"))
# The most scopes one token request may ask for; clients ask for one to three.
TOKEN_MAX_SCOPES = env.int("TOKEN_MAX_SCOPES", default=32)

# --- Notifications from the registry ---
NOTIFICATIONS_TOKEN = env("NOTIFICATIONS_TOKEN", default="")
NOTIFICATIONS_MAX_BODY = env.int("NOTIFICATIONS_MAX_BODY", default=1024 * 1024)
# Seconds the webhook lets stored events gather before one step applies them to the repository
# index and the pull counters (the audit row is stored, durably, before the 2xx either way).
# 0: applied inside each delivery's own transaction, as before (slower, nothing to wait for).
NOTIFICATIONS_APPLY_DELAY = env.float("NOTIFICATIONS_APPLY_DELAY", default=0.25)
if not 0 <= NOTIFICATIONS_APPLY_DELAY <= 1:
    raise ImproperlyConfigured(
        f"NOTIFICATIONS_APPLY_DELAY={NOTIFICATIONS_APPLY_DELAY} is out of range: write seconds "
        "from 0 (apply in the delivery's transaction) to 1 (pages may lag events by twice that)."
    )

# --- The REST API (/api/v1/) ---
# Requests one API token may make, per process (each gunicorn worker counts in its own memory):
# a number and s, m, h or d.
API_THROTTLE_RATE = env("API_THROTTLE_RATE", default="600/m")
# Largest JSON body the API reads (a bulk delete of 1,000 tags is about 100 KB).
API_MAX_BODY = env.int("API_MAX_BODY", default=256 * 1024)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["registry_admin.api.auth.ApiTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["registry_admin.api.auth.HasScope"],
    "DEFAULT_THROTTLE_CLASSES": ["registry_admin.api.auth.TokenRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_token": API_THROTTLE_RATE},
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["registry_admin.api.problems.LimitedJSONParser"],
    "EXCEPTION_HANDLER": "registry_admin.api.problems.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    "UNAUTHENTICATED_TOKEN": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Oyster API",
    "DESCRIPTION": (
        "Oyster's REST API: the registry's repositories and tags, safe tag deletes, the audit "
        "log and the worker's runs. Send `Authorization: Bearer <token>` (a token from your "
        "profile page or `manage.py api_token create`); errors are RFC 9457 problem details."
    ),
    "VERSION": "1",
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "APPEND_COMPONENTS": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "SECURITY": [{"bearer": []}],
    "AUTHENTICATION_WHITELIST": [],
    "DISABLE_ERRORS_AND_WARNINGS": False,
}

# --- Prometheus /metrics ---
# Set: a scrape needs `Authorization: Bearer <token>`, from any address. Empty: no token, but
# only the addresses (or networks, 10.0.0.0/8) below may scrape.
# Outgoing event hooks (registry_admin/event_hooks.py): loopback and private addresses are
# refused unless allowed; seconds to connect and to read an answer; the CloudEvents `source`;
# days delivered rows are kept.
_allow_private = env("EVENT_HOOKS_ALLOW_PRIVATE", default="0").strip().lower()
if _allow_private not in ("0", "1", "true", "false", "yes", "no", "on", "off", ""):
    raise ImproperlyConfigured(
        f"EVENT_HOOKS_ALLOW_PRIVATE={_allow_private[:20]!r}: write 1 (allow) or 0 (refuse)."
    )
# A security switch: only an explicit yes turns it on, never a typo.
EVENT_HOOKS_ALLOW_PRIVATE = _allow_private in ("1", "true", "yes", "on")
EVENT_HOOKS_TIMEOUT = env.float("EVENT_HOOKS_TIMEOUT", default=5.0)
EVENT_HOOKS_SOURCE = env("EVENT_HOOKS_SOURCE", default="/oyster")
EVENT_HOOKS_KEEP_DAYS = env.int("EVENT_HOOKS_KEEP_DAYS", default=7)
if not 0.5 <= EVENT_HOOKS_TIMEOUT <= 60 or not 1 <= EVENT_HOOKS_KEEP_DAYS <= 3650:
    raise ImproperlyConfigured(
        "EVENT_HOOKS_TIMEOUT must be 0.5-60 seconds and EVENT_HOOKS_KEEP_DAYS 1-3650 days."
    )

METRICS_TOKEN = env("METRICS_TOKEN", default="")
METRICS_ALLOWED_ADDRESSES = env.list("METRICS_ALLOWED_ADDRESSES", default=["127.0.0.1", "::1"])
# The largest repositories of the latest storage scan reported one by one.
METRICS_TOP_REPOSITORIES = env.int("METRICS_TOP_REPOSITORIES", default=10)
# Seconds a scrape may wait for the registry's ping (each process pings at most every 15 s);
# REGISTRY_TIMEOUT when that is shorter. /v2/ is answered in milliseconds when all is well.
METRICS_REGISTRY_TIMEOUT = env.float("METRICS_REGISTRY_TIMEOUT", default=1.0)


def _duration_seconds(name, value):
    """`90`, `90s`, `30m`, `24h` or `2d` as seconds; anything else stops the start with a sentence."""
    match = re.fullmatch(r"\s*(\d{1,12}(?:\.\d{1,6})?)\s*([smhd]?)\s*", value, re.IGNORECASE)
    seconds = (
        match
        and float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2].lower()]
    )
    # Above ten years is a typo, and a timedelta that large overflows date arithmetic.
    if not seconds or not 0 < seconds <= 3650 * 86400:
        raise ImproperlyConfigured(
            f"{name}={value[:40]!r} is not a duration: write seconds (86400) or a number with "
            "s, m, h or d (24h, 90m, 2d), more than zero and at most ten years."
        )
    return seconds


# How long the registry may stay silent (while it answers) before the dashboard warns.
# The older NOTIFICATIONS_SILENCE_WARNING_HOURS (in hours) still works when the new name is unset.
_silence_hours = env("NOTIFICATIONS_SILENCE_WARNING_HOURS", default="").strip()
NOTIFICATIONS_SILENCE_WARNING = (
    _duration_seconds("NOTIFICATIONS_SILENCE_WARNING", env("NOTIFICATIONS_SILENCE_WARNING"))
    if env("NOTIFICATIONS_SILENCE_WARNING", default="").strip()
    else _duration_seconds("NOTIFICATIONS_SILENCE_WARNING_HOURS", f"{_silence_hours}h")
    if _silence_hours
    else 24 * 3600.0
)
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=365)
# Most events one CSV export may hold (a larger match is refused with a message; 0: no cap).
AUDIT_EXPORT_MAX_ROWS = env.int("AUDIT_EXPORT_MAX_ROWS", default=100_000)
# Seconds between the worker's prunes of the audit log (0 turns the schedule off).
AUDIT_PRUNE_INTERVAL = env.int("AUDIT_PRUNE_INTERVAL", default=24 * 3600)

# --- Pull statistics ---
# Accounts whose manifest GETs are not pulls (scanners, mirrors); the service account never counts.
PULL_IGNORE_USERS = [name.strip() for name in env.list("PULL_IGNORE_USERS", default=[]) if name]
# Case-insensitive substrings of user agents whose GETs are not pulls (e.g. trivy, clair).
PULL_IGNORE_USER_AGENTS = [
    agent.strip().lower() for agent in env.list("PULL_IGNORE_USER_AGENTS", default=[]) if agent
]
# What one GB (2**30 bytes) of blob storage costs per month, for the unused-images report.
# Default: Azure Blob Storage, Hot tier, LRS, first 50 TB, pay-as-you-go (USD).
STORAGE_PRICE_PER_GB_MONTH = env.float("STORAGE_PRICE_PER_GB_MONTH", default=0.018)

# --- Background work ---
SYNC_INTERVAL = env.int("SYNC_INTERVAL", default=600)
SYNC_CONCURRENCY = env.int("SYNC_CONCURRENCY", default=8)
STORAGE_SCAN_INTERVAL = env.int("STORAGE_SCAN_INTERVAL", default=6 * 3600)
RETENTION_SCHEDULE_ENABLED = env.bool("RETENTION_SCHEDULE_ENABLED", default=False)
RETENTION_INTERVAL = env.int("RETENTION_INTERVAL", default=24 * 3600)
WORKER_POLL_SECONDS = env.float("WORKER_POLL_SECONDS", default=2.0)
# Seconds a job kind's lease lasts without renewal: a worker killed mid-job is taken over by
# another worker this long after its last renewal (a live worker renews it every third of it).
WORKER_LEASE_SECONDS = env.int("WORKER_LEASE_SECONDS", default=300)

# --- Storage usage ---
STORAGE_BACKEND = env("STORAGE_BACKEND", default="filesystem")
STORAGE_FILESYSTEM_ROOT = str(_path("STORAGE_FILESYSTEM_ROOT", DATA_DIR / "registry" / "storage"))
STORAGE_TIMEOUT = env.float("STORAGE_TIMEOUT", default=30.0)
# Linked manifests read at once while the listing goes on (the scan reads only those).
STORAGE_READ_CONCURRENCY = env.int("STORAGE_READ_CONCURRENCY", default=8)
# Azure Blob requests at once when the online collector deletes (batches of 256) and copies
# (one blob each) blobs; the filesystem backend renames and removes in one thread.
STORAGE_WRITE_CONCURRENCY = env.int("STORAGE_WRITE_CONCURRENCY", default=8)
# How the scan signs in to Azure: default (azure-identity's chain: managed identity, workload
# identity, `az login`), key, connection_string or sas; empty: the first of those secrets set.
AZURE_STORAGE_CREDENTIAL = env("AZURE_STORAGE_CREDENTIAL", default="")
AZURE_STORAGE_SAS_TOKEN = env("AZURE_STORAGE_SAS_TOKEN", default="")
# Azure: the portal's own names first, then the registry's REGISTRY_STORAGE_AZURE_* as fallbacks,
# so one env file can serve both.
AZURE_STORAGE_CONNECTION_STRING = env("AZURE_STORAGE_CONNECTION_STRING", default="")
AZURE_STORAGE_ACCOUNT_NAME = env(
    "AZURE_STORAGE_ACCOUNT_NAME", default=env("REGISTRY_STORAGE_AZURE_ACCOUNTNAME", default="")
)
AZURE_STORAGE_ACCOUNT_KEY = env(
    "AZURE_STORAGE_ACCOUNT_KEY", default=env("REGISTRY_STORAGE_AZURE_ACCOUNTKEY", default="")
)
AZURE_STORAGE_ACCOUNT_URL = env("AZURE_STORAGE_ACCOUNT_URL", default="")
AZURE_STORAGE_CONTAINER = env(
    "AZURE_STORAGE_CONTAINER", default=env("REGISTRY_STORAGE_AZURE_CONTAINER", default="")
)
AZURE_STORAGE_ROOT_DIRECTORY = env(
    "AZURE_STORAGE_ROOT_DIRECTORY", default=env("REGISTRY_STORAGE_AZURE_ROOTDIRECTORY", default="")
)

# --- Getting the space back ---
# Untagged manifests linked more recently than this are never removed: a multi-platform push
# uploads its children before the index that tags them.
UNTAGGED_GRACE_MINUTES = env.int("UNTAGGED_GRACE_MINUTES", default=60)
# The registry's own collector: `registry` (official image) or Debian's `docker-registry`,
# whichever is on PATH, unless set (a command line; Oyster appends `garbage-collect CONFIG`).
REGISTRY_GC_COMMAND = env("REGISTRY_GC_COMMAND", default="") or next(
    (name for name in ("registry", "docker-registry") if shutil.which(name)), "registry"
)
# Seconds a collector run may take before it is stopped.
REGISTRY_GC_TIMEOUT = env.int("REGISTRY_GC_TIMEOUT", default=3600)
# The online collector (docs/online-collector.md). A blob whose data, or any of whose links,
# is younger than this is kept: an upload whose manifest is not pushed yet.
GC_GRACE_MINUTES = env.int("GC_GRACE_MINUTES", default=60)
# Seconds between removing links (or moving data) and the re-check that looks for pushes that
# overtook it.
GC_SETTLE_SECONDS = env.float("GC_SETTLE_SECONDS", default=10.0)
# Hours collected data stays in the trash (oyster-trash/ on the registry's storage) before a
# later run purges it, after one more check.
GC_TRASH_HOURS = env.float("GC_TRASH_HOURS", default=24.0)
# The registry's blob-descriptor cache (`storage.cache.blobdescriptor`): none, inmemory (the
# official image's default config) or redis; and how many registry processes serve the
# storage. Several processes with an in-memory cache are refused: one could accept a push
# against a blob the collector took away.
REGISTRY_BLOB_CACHE = env("REGISTRY_BLOB_CACHE", default="inmemory").strip().lower()
REGISTRY_INSTANCES = env.int("REGISTRY_INSTANCES", default=1)
ONLINE_GC_SCHEDULE_ENABLED = env.bool("ONLINE_GC_SCHEDULE_ENABLED", default=False)
ONLINE_GC_INTERVAL = env.int("ONLINE_GC_INTERVAL", default=24 * 3600)
# The recycle bin (docs/recycle-bin.md): days a delete Oyster makes stays restorable, its blobs
# kept by the online collector; 0 holds nothing. The purge runs every BIN_PURGE_INTERVAL.
RECYCLE_BIN_DAYS = env.int("RECYCLE_BIN_DAYS", default=7)
BIN_PURGE_INTERVAL = env.int("BIN_PURGE_INTERVAL", default=24 * 3600)
if not 0 <= RECYCLE_BIN_DAYS <= 365:
    raise ImproperlyConfigured(
        f"RECYCLE_BIN_DAYS={RECYCLE_BIN_DAYS}: write a whole number of days from 0 (off) to 365."
    )
if REGISTRY_BLOB_CACHE not in ("none", "inmemory", "redis"):
    raise ImproperlyConfigured(
        f"REGISTRY_BLOB_CACHE={REGISTRY_BLOB_CACHE!r}: write none, inmemory or redis (the "
        "registry's storage.cache.blobdescriptor; none when it has no cache section)."
    )
for _name, _value, _low in (
    ("GC_GRACE_MINUTES", GC_GRACE_MINUTES, 1),
    ("REGISTRY_INSTANCES", REGISTRY_INSTANCES, 1),
):
    if _value < _low:
        raise ImproperlyConfigured(f"{_name}={_value}: write a whole number of at least {_low}.")
if not 0 <= GC_SETTLE_SECONDS <= 600 or not 0 <= GC_TRASH_HOURS <= 24 * 90:
    raise ImproperlyConfigured(
        "GC_SETTLE_SECONDS must be 0-600 seconds and GC_TRASH_HOURS 0-2160 hours."
    )

# --- Logging: one line per event to stdout, for gunicorn, Docker and App Service ---
LOG_LEVEL = env("LOG_LEVEL", default="INFO").upper()
# A management command's stdout is its answer (a token, `--json`) that scripts capture: its log
# lines go to stderr. The long-running ones (the worker, the development server) log to stdout
# like the web processes.
_COMMAND = sys.argv[1] if len(sys.argv) > 1 and sys.argv[0].endswith("manage.py") else ""
LOG_STREAM = (
    "ext://sys.stderr"
    if _COMMAND and _COMMAND not in ("run_worker", "runserver")
    else "ext://sys.stdout"
)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": LOG_STREAM,
            "formatter": "line",
        },
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["stdout"], "level": LOG_LEVEL, "propagate": False},
        "axes": {"handlers": ["stdout"], "level": "WARNING", "propagate": False},
        # The Azure SDK logs every request at INFO: one line per listing page and manifest read.
        "azure": {"handlers": ["stdout"], "level": "WARNING", "propagate": False},
    },
}
