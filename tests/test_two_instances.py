"""Two portal instances and two workers on one PostgreSQL database and one real registry.

The arrangement of the Azure guide, started for real: two gunicorn instances (the registry sends
every event to both, and to a sink that records what was sent), two `run_worker` processes, and
at the same time user changes through both instances' pages and command lines and job requests
through both instances' pages. Then a worker is SIGKILLed in the middle of a job and the other
one takes it over once the lease expires.

It needs PostgreSQL (`make test-postgres`); the module is marked `postgres`, which `make test`
deselects and which fails on SQLite rather than passing there. It makes a database of its own in
the server the suite runs on, so its gunicorn and worker processes never race the suite's flushes.
"""

import json
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from urllib.parse import quote

import psycopg
import pytest
import requests
import yaml

from registry_admin.tests.harness import (
    SERVICE_PASSWORD,
    SERVICE_USER,
    start_registry,
    stop_process,
)
from registry_admin.tests.images import build_image

from .portal_process import ROOT, EventSink, PortalProcess

pytestmark = [pytest.mark.postgres, pytest.mark.live, pytest.mark.slow]

ADMIN_PASSWORD = "two-instances-admin-password-1"
LEASE_SECONDS = 3
IMAGES = 10
PAGE_USERS = 6  # per instance
CLI_USERS = 2  # per instance
REQUEST_ROUNDS = 6  # per instance and kind


def _server_url(database):
    from django.conf import settings

    db = settings.DATABASES["default"]
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    return f"postgresql://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{database}"


@pytest.fixture
def database():
    """A database of its own in the suite's PostgreSQL server, dropped afterwards."""
    name = f"oyster_two_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _server_url(name)
    finally:
        with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def rows(url, sql, params=()):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def wait_until(predicate, timeout, message):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


class Browser:
    """A logged-in admin session on one instance (plain HTTP, CSRF as a form posts it)."""

    def __init__(self, portal):
        self.base = portal.url
        self.session = requests.Session()
        self.token = self.csrf_token("/login/")
        response = self.post("/login/", {"username": "admin", "password": ADMIN_PASSWORD})
        assert response.status_code == 302, response.text[:500]
        self.token = self.csrf_token("/users/new/")  # logging in rotates it

    def csrf_token(self, path):
        page = self.session.get(f"{self.base}{path}", timeout=10)
        assert "csrfmiddlewaretoken" in page.text, (page.status_code, page.text[:3000])
        return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)

    def post(self, path, data):
        token = self.token
        return self.session.post(
            f"{self.base}{path}",
            data={**data, "csrfmiddlewaretoken": token},
            allow_redirects=False,
            timeout=30,
        )


def start_worker(portal, log_path):
    log = open(log_path, "ab")  # noqa: SIM115  (kept open for the process's lifetime)
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_worker"],
        cwd=ROOT,
        env=portal.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def cli_add_user(portal, name):
    return subprocess.run(
        [sys.executable, "manage.py", "htpasswd", "add", name, "--password-stdin"],
        cwd=ROOT,
        env=portal.env,
        input=f"{name}-password-123\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def assert_one_at_a_time(url):
    """No two runs of one kind ever overlapped, whichever worker ran them."""
    runs = rows(
        url,
        "SELECT kind, id, started_at, finished_at FROM registry_admin_run "
        "WHERE started_at IS NOT NULL ORDER BY kind, started_at",
    )
    previous = {}
    for kind, pk, started, finished in runs:
        assert finished is not None, f"run {kind} #{pk} never finished"
        if kind in previous:
            prev_pk, prev_finished = previous[kind]
            assert started >= prev_finished, f"{kind} #{pk} started while #{prev_pk} ran"
        previous[kind] = (pk, finished)
    return runs


def test_two_instances_and_two_workers_keep_one_truth(tmp_path, database):
    sink = EventSink()
    portals = []
    workers = []
    registry = None
    try:
        env = {
            "WORKER_LEASE_SECONDS": str(LEASE_SECONDS),
            "WORKER_POLL_SECONDS": "0.2",
            "SYNC_INTERVAL": "0",
            "STORAGE_SCAN_INTERVAL": "0",
            "AUDIT_PRUNE_INTERVAL": "0",
            "HTPASSWD_BCRYPT_ROUNDS": "4",
            # As deployed (the suite applies in each delivery): stored events are applied in
            # batches by both workers and, as a fallback, by both instances; they take turns.
            "NOTIFICATIONS_APPLY_DELAY": "0.25",
            "PORTAL_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "REGISTRY_USERNAME": SERVICE_USER,
            # Production settings but static files from the finders (no collectstatic run) and
            # quick portal password hashing: what this test is about is the database.
            "DJANGO_SETTINGS_MODULE": "portal.settings_test",
            # Access lines show that both instances took deliveries.
            "GUNICORN_CMD_ARGS": "--access-logfile -",
        }
        for name in ("a", "b"):
            portals.append(
                PortalProcess(
                    tmp_path / name, workers=1, threads=4, extra_env=env, database_url=database
                )
            )
        a, b = portals
        registry = start_registry(tmp_path / "registry", a.url)
        config = yaml.safe_load(registry.config_path.read_text())
        endpoints = config["notifications"]["endpoints"]
        endpoints[0].update({"name": "a", "timeout": "2s", "threshold": 3, "backoff": "300ms"})
        endpoints.append({**endpoints[0], "name": "b", "url": f"{b.url}/api/registry/events"})
        endpoints.append({"name": "sink", "url": sink.url, "timeout": "2s", "backoff": "300ms"})
        registry.restart(config)
        for portal in portals:
            portal.env.update(
                {
                    "REGISTRY_URL": registry.url,
                    "REGISTRY_PASSWORD": SERVICE_PASSWORD,
                    "HTPASSWD_PATH": str(registry.htpasswd_path),
                    "STORAGE_FILESYSTEM_ROOT": str(registry.storage_root),
                }
            )
        a.manage("migrate", "--noinput", "-v0")
        a.manage("ensure_admin")
        for portal in portals:
            portal.start()
        workers = [start_worker(p, p.workdir / "worker.log") for p in portals]
        browsers = [Browser(a), Browser(b)]

        errors = []

        def guarded(function, *args):
            def run():
                try:
                    function(*args)
                except Exception as exc:  # noqa: BLE001  (reported by the main thread)
                    errors.append(f"{function.__name__}{args}: {exc!r}")

            return threading.Thread(target=run)

        def push_images():
            pusher = registry.pusher()
            for i in range(IMAGES):
                pusher.push_image(f"two/app{i % 3}", f"v{i}", build_image(seed=f"two-{i}"))

        def page_users(index):
            browser = browsers[index]
            for i in range(PAGE_USERS):
                name = f"page{index}-{i}"
                password = f"{name}-password-123"
                response = browser.post(
                    "/users/new/",
                    {
                        "username": name,
                        "mode": "typed",
                        "password1": password,
                        "password2": password,
                    },
                )
                assert response.status_code == 302, (name, response.text[:300])

        def cli_users(index):
            for i in range(CLI_USERS):
                cli_add_user(portals[index], f"cli{index}-{i}")

        def job_requests(index):
            browser = browsers[index]
            for _ in range(REQUEST_ROUNDS):
                for kind in ("sync", "noop"):
                    response = browser.post(f"/runs/{kind}/request", {"next": "/"})
                    assert response.status_code == 302, (kind, response.status_code)
                time.sleep(0.3)

        threads = [guarded(push_images)]
        for index in (0, 1):
            threads += [
                guarded(page_users, index),
                guarded(cli_users, index),
                guarded(job_requests, index),
            ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        assert not errors, errors

        # Users: every change from either instance, page or command line, is in the file.
        lines = registry.htpasswd_path.read_text().splitlines()
        names = [line.split(":", 1)[0] for line in lines if line and not line.startswith("#")]
        expected = {f"page{i}-{n}" for i in (0, 1) for n in range(PAGE_USERS)}
        expected |= {f"cli{i}-{n}" for i in (0, 1) for n in range(CLI_USERS)}
        assert expected <= set(names), f"lost: {sorted(expected - set(names))}"
        assert len(names) == len(set(names)), "a user line was written twice"
        created = rows(
            database,
            "SELECT count(*) FROM registry_admin_auditevent WHERE action = 'user.created'",
        )[0][0]
        assert created == len(expected)

        # Events: the registry sent each event to both instances; each is stored exactly once.
        def drained():
            sent = sink.snapshot()
            stored = [
                r[0]
                for r in rows(
                    database,
                    "SELECT event_id FROM registry_admin_auditevent WHERE source = 'registry'",
                )
            ]
            return (sent, stored) if sent and set(stored) == sent else None

        sent, stored = wait_until(drained, 60, "every sent event to be stored")
        assert len(sent) >= IMAGES * 3
        assert len(stored) == len(set(stored)), "an event was stored twice"
        manifest_pushes = rows(
            database,
            "SELECT count(*) FROM registry_admin_auditevent "
            "WHERE action = 'push' AND kind = 'manifest'",
        )[0][0]
        assert manifest_pushes == IMAGES
        # Both instances really took deliveries (the same events, at about the same time).
        deliveries = [
            portal.log_path.read_text().count('"POST /api/registry/events') for portal in portals
        ]
        assert min(deliveries) >= len(stored), deliveries

        # Jobs: everything requested ran, one at a time per kind, across both workers.
        def idle():
            return not rows(
                database,
                "SELECT id FROM registry_admin_run WHERE state IN ('requested', 'running')",
            )

        wait_until(idle, 90, "the requested runs to finish")
        states = dict(rows(database, "SELECT state, count(*) FROM registry_admin_run GROUP BY 1"))
        assert set(states) == {"done"}, states
        assert_one_at_a_time(database)
        wait_until(
            lambda: not rows(database, "SELECT 1 FROM registry_admin_pendingevent"),
            10,
            "every stored event to be applied",
        )
        repositories = rows(
            database, "SELECT count(*) FROM registry_admin_repository WHERE name LIKE 'two/%%'"
        )[0][0]
        assert repositories == 3

        # A worker killed in the middle of a job: the other one takes it over after the lease.
        with psycopg.connect(database) as conn:
            (long_run,) = conn.execute(
                "INSERT INTO registry_admin_run (kind, state, options, requested_by, "
                "requested_at, done, message, error, result) VALUES ('noop', 'requested', "
                "%s, 'test', now(), 0, '', '', '{}') RETURNING id",
                [json.dumps({"seconds": 2 * LEASE_SECONDS})],
            ).fetchone()
        owner = wait_until(
            lambda: rows(
                database,
                "SELECT l.owner FROM registry_admin_joblease l JOIN registry_admin_run r "
                "ON r.kind = l.kind WHERE l.kind = 'noop' AND r.id = %s AND r.state = 'running'",
                [long_run],
            ),
            30,
            "a worker to start the long run",
        )[0][0]
        pid = int(owner.rsplit(":", 1)[1])
        (victim,) = [w for w in workers if w.pid == pid]
        # Past a lease: a live worker renews it while the job is quiet (no takeover yet).
        time.sleep(LEASE_SECONDS + 1)
        assert rows(database, "SELECT state FROM registry_admin_run WHERE id = %s", [long_run])[0][
            0
        ] == ("running")
        killed_at = time.time()
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)

        def taken_over():
            (state, error) = rows(
                database, "SELECT state, error FROM registry_admin_run WHERE id = %s", [long_run]
            )[0]
            match = re.search(r"run #(\d+) takes it over", error)
            if state != "failed" or not match:
                return None
            again = rows(
                database,
                "SELECT state, options, extract(epoch FROM started_at) FROM registry_admin_run "
                "WHERE id = %s",
                [int(match.group(1))],
            )[0]
            return again if again[0] == "done" else None

        state, options, started = wait_until(taken_over, 40, "the other worker to take over")
        assert options == {"seconds": 2 * LEASE_SECONDS}
        assert float(started) >= killed_at + LEASE_SECONDS - 1.5  # not before the lease expired
        assert_one_at_a_time(database)
    finally:
        for process in workers:
            stop_process(process)
        for portal in portals:
            portal.stop()
        if registry is not None:
            registry.stop()
        sink.close()
