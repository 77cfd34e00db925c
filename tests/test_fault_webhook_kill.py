"""Fault: the portal is SIGKILLed while the real registry streams pushes at it, then restarted.

The registry sends every event to two endpoints: the portal and a sink that records what was
sent. After the registry's retries drain, the portal must hold exactly the sink's event ids:
none lost, none twice.
"""

import threading
import time

import pytest
import yaml

from registry_admin.tests.harness import start_registry
from registry_admin.tests.images import build_image

from .portal_process import EventSink, PortalProcess

pytestmark = [pytest.mark.live, pytest.mark.slow]


def stored_ids(portal):
    return [
        row[0]
        for row in portal.query(
            "SELECT event_id FROM registry_admin_auditevent WHERE source = 'registry'"
        )
    ]


def test_every_event_is_stored_exactly_once_across_a_sigkill(tmp_path):
    portal = PortalProcess(tmp_path / "portal")
    portal.manage("migrate", "--noinput", "-v0")
    portal.start()
    sink = EventSink()
    registry = start_registry(tmp_path / "registry", portal.url)
    try:
        config = yaml.safe_load(registry.config_path.read_text())
        endpoints = config["notifications"]["endpoints"]
        endpoints[0].update({"timeout": "1s", "threshold": 2, "backoff": "500ms"})
        endpoints.append(
            {"name": "sink", "url": sink.url, "timeout": "2s", "threshold": 2, "backoff": "500ms"}
        )
        registry.restart(config)
        pusher = registry.pusher()

        pushed = []

        def push_all():
            for i in range(24):
                pusher.push_image(f"fault/app{i % 3}", f"v{i}", build_image(seed=f"kill-{i}"))
                pushed.append(i)

        thread = threading.Thread(target=push_all)
        thread.start()
        while len(pushed) < 8:
            time.sleep(0.02)
        portal.kill()  # SIGKILL, mid-stream
        time.sleep(1.5)
        portal.start()
        thread.join(120)
        assert len(pushed) == 24

        # Drain: the registry retries the failed delivery, then sends everything queued behind it.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            sent = sink.snapshot()
            ids = stored_ids(portal)
            if sent and set(ids) == sent:
                break
            time.sleep(0.5)
        sent, ids = sink.snapshot(), stored_ids(portal)
        assert len(sent) >= 24 * 3  # two blob pushes and a manifest push per image
        assert set(ids) == sent, (
            f"missing {len(sent - set(ids))}, unexpected {len(set(ids) - sent)}"
        )
        assert len(ids) == len(set(ids))
        manifest_pushes = portal.query(
            "SELECT COUNT(*) FROM registry_admin_auditevent WHERE action = 'push' AND kind = 'manifest'"
        )[0][0]
        assert manifest_pushes == 24
        # The kill really hit deliveries: the registry logged failures to the portal's endpoint.
        log = registry.log_path.read_text()
        assert f"httpSink{{{portal.url}/api/registry/events}}: error posting" in log
    finally:
        registry.stop()
        portal.stop()
        sink.close()
