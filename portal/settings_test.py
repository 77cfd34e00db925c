"""Settings for the test suite: production settings with test-only values from the environment."""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-0123456789")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="oyster-test-data-"))
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("SESSION_COOKIE_SECURE", "0")
os.environ.setdefault("CSRF_COOKIE_SECURE", "0")
os.environ.setdefault("WHITENOISE_USE_FINDERS", "1")
os.environ.setdefault("REGISTRY_TIMEOUT", "3")
os.environ.setdefault("REGISTRY_PASSWORD", "unset-in-tests")
os.environ.setdefault("NOTIFICATIONS_TOKEN", "test-notifications-token-0123456789")
# Most tests read the index right after a delivery: apply in its transaction (the batched
# mode has tests of its own in test_ingest.py).
os.environ.setdefault("NOTIFICATIONS_APPLY_DELAY", "0")
# Playwright's sync API runs an event loop in the test thread; the ORM calls there are still sync.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "1")

from .settings import *  # noqa: E402,F403

# The manifest storage needs collectstatic; tests serve from the finders instead.
STORAGES["staticfiles"] = {  # noqa: F405
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
}
STATIC_ROOT = DATA_DIR / "staticfiles"  # noqa: F405
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Portal accounts in tests do not need slow hashing.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["*"]
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file instead of Django's shared-cache in-memory test database: the live server thread
    # (where the registry's notifications land) writes while tests read, and shared-cache
    # SQLite answers "database table is locked" at once; a WAL file waits (busy timeout).
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}  # noqa: F405
