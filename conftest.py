"""Project-wide pytest setup: real-component fixtures live in registry_admin/tests/harness.py."""

import subprocess

import pytest

# Imported here before pytest_plugins loads it: registered first, its asserts are still rewritten.
pytest.register_assert_rewrite("registry_admin.tests.harness")
from registry_admin.tests import harness  # noqa: E402

pytest_plugins = ["registry_admin.tests.harness", "registry_admin.tests.fixtures"]

# Fixtures from plugins that start an outside process or server: pytest-django's live server
# (a thread, which the check below cannot see) and pytest-playwright's driver (Node) and browser.
# The harness's and the test modules' own fixtures declare themselves with `harness.live_fixture`.
PLUGIN_LIVE_FIXTURES = frozenset({"live_server", "playwright", "browser", "context", "page"})


def pytest_collection_modifyitems(items):
    live = PLUGIN_LIVE_FIXTURES | harness.LIVE_FIXTURES
    for item in items:
        if live.intersection(item.fixturenames):
            item.add_marker(pytest.mark.live)


# The test being run (setup, call and teardown) while it is not marked `live`, and the outside
# program it tried to start: `make test-fast` must pass on a machine without those programs, so
# starting one unmarked fails in every run, not only on such a machine.
_unmarked = {"item": None, "started": None}
_popen_init = subprocess.Popen.__init__


def _checked_popen_init(self, args, *rest, **kwargs):
    item = _unmarked["item"]
    if item is not None:
        program = harness.outside_program(
            args, kwargs.get("executable"), kwargs.get("shell", False)
        )
        if program:
            _unmarked["started"] = program
            pytest.fail(_unmarked_message(item, program), pytrace=False)
    _popen_init(self, args, *rest, **kwargs)


def _unmarked_message(item, program):
    return (
        f"{item.nodeid} starts {program} but is not marked live, so `make test-fast` would run "
        "it where that program is missing: declare the fixture that starts it with "
        "`harness.live_fixture`, or mark the test `@pytest.mark.live`"
    )


def pytest_configure(config):
    subprocess.Popen.__init__ = _checked_popen_init


def pytest_unconfigure(config):
    subprocess.Popen.__init__ = _popen_init


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _unmarked["item"] = None if item.get_closest_marker("live") else item
    _unmarked["started"] = None
    try:
        return (yield)
    finally:
        _unmarked["item"] = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """The failure stands even if the test swallowed it (a thread, `except BaseException`)."""
    report = yield
    program = _unmarked["started"]
    if program and _unmarked["item"] is item and report.passed:
        report.outcome = "failed"
        report.longrepr = _unmarked_message(item, program)
    if program:
        _unmarked["started"] = None
    return report


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
