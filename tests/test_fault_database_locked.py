"""Fault: the database is locked while the registry delivers notifications.

Each delivery must fail (non-2xx), so the registry keeps the event and retries it; once the
lock is gone every event is stored, once.
"""

import sqlite3
import time

import pytest
import requests
import yaml

from registry_admin.tests.harness import NOTIFICATIONS_TOKEN, start_registry
from registry_admin.tests.images import build_image

from .portal_process import EventSink, PortalProcess, stored_event_ids

pytestmark = [pytest.mark.live, pytest.mark.slow]


def test_a_locked_database_fails_the_delivery_and_the_retry_stores_it_once(tmp_path):
    portal = PortalProcess(tmp_path / "portal", extra_env={"SQLITE_TIMEOUT": "1"})
    portal.manage("migrate", "--noinput", "-v0")
    portal.start()
    sink = EventSink()
    registry = start_registry(tmp_path / "registry", portal.url)
    try:
        config = yaml.safe_load(registry.config_path.read_text())
        endpoints = config["notifications"]["endpoints"]
        endpoints[0].update({"timeout": "3s", "threshold": 2, "backoff": "500ms"})
        endpoints.append({"name": "sink", "url": sink.url, "timeout": "2s", "backoff": "500ms"})
        registry.restart(config)

        locker = sqlite3.connect(portal.db_path, timeout=5, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            # A direct delivery while locked: refused with a retryable status, not acknowledged.
            response = requests.post(
                f"{portal.url}/api/registry/events",
                data=b'{"events": [{"id": "locked-probe", "action": "push", "timestamp": "2024-01-01T00:00:00Z", "target": {"repository": "x"}}]}',
                headers={
                    "Authorization": f"Bearer {NOTIFICATIONS_TOKEN}",
                    "Content-Type": "application/vnd.docker.distribution.events.v1+json",
                },
                timeout=10,
            )
            assert response.status_code == 503
            registry.pusher().push_image("locked/app", "v1", build_image(seed="locked"))
            time.sleep(3)  # the registry tries, fails and backs off meanwhile
        finally:
            locker.execute("ROLLBACK")
            locker.close()

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sink.snapshot() and set(stored_event_ids(portal)) == sink.snapshot():
                break
            time.sleep(0.5)
        ids = stored_event_ids(portal)
        assert set(ids) == sink.snapshot()
        assert len(ids) == len(set(ids)) >= 3
        assert "locked-probe" not in ids
        log = registry.log_path.read_text()
        assert f"httpSink{{{portal.url}/api/registry/events}}: " in log
        assert "503" in log
    finally:
        registry.stop()
        portal.stop()
        sink.close()
