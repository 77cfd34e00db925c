"""Fault: the registry stopped, and a registry that accepts connections but never answers.

Every page of the portal (every URL pattern, with real arguments from a seeded index) must
answer within REGISTRY_TIMEOUT + 1 s with a clear message and never a 500. The bound is the
issue's correctness requirement (a hung registry must not hang the portal), not a speed goal.
"""

import time

import pytest
from django.core.cache import cache

from .portal_pages import confirmed, page_requests, seed_portal, url_pattern_names

pytestmark = [pytest.mark.live, pytest.mark.slow]

TIMEOUT = 1
STOPPED = "is unreachable (connection refused"
SILENT = f"did not answer within {TIMEOUT} seconds"
# Answers a page may give besides 200; never a 5xx other than the detail page's 503 ("the
# registry cannot show this image and the index has nothing"), which carries the message.
ALLOWED = {200, 302, 400, 401, 403, 404, 405}


@pytest.fixture
def seeded(tmp_path, settings, admin_client):
    seed = seed_portal(tmp_path, settings, admin_client)
    yield seed
    seed.close()


def every_request(seed):
    requests = page_requests(seed)
    covered = {r.name for r in requests}
    assert covered == url_pattern_names(), "a URL pattern without a request in page_requests()"
    # The pages' deletes, confirmed; the API's bulk delete answers the session 401 either way.
    deletes = [
        r
        for r in requests
        if r.method == "POST" and r.name.endswith("-delete") and not r.name.startswith("api:")
    ]
    logout = requests.pop()
    assert logout.name == "logout"  # stays last: it ends the session
    return requests + [confirmed(r) for r in deletes] + [logout]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fault", ["stopped", "silent"])
def test_every_page_answers_in_time_with_a_message(
    fault, seeded, admin_client, settings, silent_port
):
    if fault == "stopped":
        seeded.registry.stop()
        expected = STOPPED
    else:
        settings.REGISTRY_URL = f"http://127.0.0.1:{silent_port}"
        expected = SILENT
    settings.REGISTRY_TIMEOUT = TIMEOUT
    problems = []
    for request in every_request(seeded):
        cache.clear()  # no page may lean on a ping another page already paid for
        started = time.monotonic()
        response = request.send(admin_client)
        elapsed = time.monotonic() - started
        body = response.content.decode(errors="replace") if not response.streaming else ""
        if elapsed >= TIMEOUT + 1:
            problems.append(f"{request.name}: {elapsed:.2f} s")
        if response.status_code not in ALLOWED and not (
            response.status_code == 503 and expected in body
        ):
            problems.append(f"{request.name}: HTTP {response.status_code}")
        if request.talks_to_registry and expected not in body:
            problems.append(f"{request.name}: no {expected!r} on the page")
    assert not problems, "\n".join(problems)
