"""Project-wide pytest setup: real-component fixtures live in registry_admin/tests/harness.py."""

import pytest

pytest_plugins = ["registry_admin.tests.harness", "registry_admin.tests.fixtures"]

# A test that asks for any of these fixtures talks to a real process (the registry, Azurite,
# Chromium or a live Django server). Marking them from their fixtures keeps the fast run honest
# without every module having to remember a marker.
LIVE_FIXTURES = frozenset(
    {
        "registry_server",
        "registry",
        "skopeo",
        "azurite",
        "live_server",
        "page",
        "browser",
        "context",
    }
)

# Modules that start those processes themselves (gunicorn, a registry, the worker) rather than
# through a fixture.
LIVE_MODULE_PREFIXES = ("test_shipping", "test_fault_", "test_container", "test_two_instances")


def pytest_collection_modifyitems(items):
    for item in items:
        if LIVE_FIXTURES.intersection(item.fixturenames) or item.path.name.startswith(
            LIVE_MODULE_PREFIXES
        ):
            item.add_marker(pytest.mark.live)


def pytest_runtest_setup(item):
    """A `postgres` test selected on SQLite fails: passing it there would prove nothing."""
    if item.get_closest_marker("postgres"):
        from django.conf import settings

        if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
            pytest.fail(
                "this test needs PostgreSQL: run it with `make test-postgres` "
                "(scripts/with-postgres.sh sets DATABASE_URL)",
                pytrace=False,
            )
