"""Failed logins as a CPU weapon (issue #14 item 2), against the portal as deployed: gunicorn with
production settings (real PBKDF2 password hashing) behind one proxy (PROXY_COUNT=1)."""

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from registry_admin.tests.factories import make_envelope, make_registry_event
from registry_admin.tests.harness import NOTIFICATIONS_TOKEN

from .portal_process import PortalProcess

LIMIT = 10


def failed_login(portal, username, address):
    """One failed login through the proxy: the front end appended the client's address."""
    headers = {"X-Forwarded-For": f"{address}:40000"}
    with requests.Session() as session:
        page = session.get(f"{portal.url}/login/", headers=headers, timeout=30)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        response = session.post(
            f"{portal.url}/login/",
            data={"csrfmiddlewaretoken": token, "username": username, "password": "guess"},
            headers={**headers, "Referer": f"{portal.url}/login/"},
            timeout=30,
        )
    return response.status_code


@pytest.mark.live
def test_fifty_user_names_from_one_address_cost_few_hashes_and_the_webhook_is_answered(tmp_path):
    """The webhook's latency during such a flood is measured by bench/token_flood.py (its
    `/login/` phase), not asserted here: on a loaded machine a one-off second is noise."""
    portal = PortalProcess(
        tmp_path / "portal",
        workers=2,
        threads=4,
        extra_env={
            "PROXY_COUNT": "1",
            "LOGIN_ADDRESS_FAILURE_LIMIT": str(LIMIT),
            # The login page renders hashed static names, as in the image.
            "STATIC_ROOT": str(tmp_path / "static"),
        },
    )
    portal.manage("migrate", "--noinput")
    portal.manage("collectstatic", "--noinput")
    portal.start()
    webhook_statuses = []
    done = threading.Event()

    def webhooks():
        while not done.is_set():
            response = requests.post(
                f"{portal.url}/api/registry/events",
                data=make_envelope(make_registry_event()),
                headers={
                    "Authorization": f"Bearer {NOTIFICATIONS_TOKEN}",
                    "Content-Type": "application/vnd.docker.distribution.events.v1+json",
                },
                timeout=10,
            )
            webhook_statuses.append(response.status_code)
            time.sleep(0.1)

    try:
        sender = threading.Thread(target=webhooks)
        sender.start()
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(
                pool.map(lambda i: failed_login(portal, f"user{i}", "203.0.113.50"), range(50))
            )
        done.set()
        sender.join(30)
    finally:
        done.set()
        portal.stop()

    hashed = statuses.count(200)
    # Each process re-checks the limit once it holds its hashing slot: at most one extra per worker.
    assert hashed <= LIMIT + 2, statuses
    assert statuses.count(429) == 50 - hashed
    assert webhook_statuses, "no webhook was sent during the flood"
    # The hashing slots and the per-address limit never touch the registry's notifications.
    assert set(webhook_statuses) == {200}, webhook_statuses
