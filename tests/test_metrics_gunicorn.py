"""/metrics as a deployment serves it: gunicorn with 2 workers, a real registry, skopeo pushes.

After a scripted push (skopeo), a tag delete (`manage.py delete_tag`), a storage scan
(`manage.py scan_storage`), a refused delivery and a failed login, every scrape, whichever
worker answers it, must hold the figures the database holds, and Debian's `promtool check
metrics` must accept the output.
"""

import datetime
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from registry_admin.tests.harness import (
    PUSH_PASSWORD,
    PUSH_USER,
    SERVICE_PASSWORD,
    SERVICE_USER,
    SKOPEO_BINARY,
    Skopeo,
    require_binary,
    start_registry,
)
from registry_admin.tests.images import build_image, write_oci_layout

from .portal_process import PortalProcess

pytestmark = [pytest.mark.live, pytest.mark.slow]

PROMTOOL = "/usr/bin/promtool"
METRICS_TOKEN = "metrics-e2e-token-0123456789abcdef"
ADMIN_PASSWORD = "metrics-admin-password-1"
# Each worker pings the registry itself; the answer time is the one line two workers may
# rightly disagree on.
PER_PROCESS = "oyster_registry_response_seconds"


def scrape(portal, token=METRICS_TOKEN):
    # A new connection each time, so gunicorn may hand it to either worker.
    return requests.get(
        f"{portal.url}/metrics",
        headers={"Authorization": f"Bearer {token}", "Connection": "close"},
        timeout=10,
    )


def parse(text):
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def settled(portal):
    """Wait until every delivery the registry sent is stored and applied: nothing pending,
    and no new registry event for a second and a half."""
    deadline = time.monotonic() + 60
    last, quiet_since = None, time.monotonic()
    while time.monotonic() < deadline:
        count = portal.query(
            "SELECT count(*) FROM registry_admin_auditevent WHERE source = 'registry'"
        )[0][0]
        pending = portal.query("SELECT count(*) FROM registry_admin_pendingevent")[0][0]
        if count != last or pending:
            last, quiet_since = count, time.monotonic()
        elif time.monotonic() - quiet_since > 1.5:
            return
        time.sleep(0.2)
    raise AssertionError("the registry's deliveries did not settle within 60 s")


def fail_a_login(portal):
    session = requests.Session()
    page = session.get(f"{portal.url}/login/", timeout=10)
    assert page.status_code == 200, page.status_code
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    answer = session.post(
        f"{portal.url}/login/",
        data={"username": "admin", "password": "not-the-password", "csrfmiddlewaretoken": token},
        headers={"Referer": f"{portal.url}/login/"},
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 200, answer.status_code  # the form again, with an error


def seconds_between(started, finished):
    parse_time = datetime.datetime.fromisoformat
    return (parse_time(finished) - parse_time(started)).total_seconds()


def expected_from_database(portal):
    """The figures /metrics must show, read straight from the portal's SQLite file."""
    expected = {}
    for action, n in portal.query(
        "SELECT action, count(*) FROM registry_admin_auditevent WHERE source = 'registry' "
        "GROUP BY action"
    ):
        expected[("oyster_notifications_received_total", (("action", action),))] = n
    unauthorized = portal.query(
        "SELECT count FROM registry_admin_deliverycounter WHERE name = 'unauthorized'"
    )
    expected[("oyster_notifications_rejected_total", (("reason", "unauthorized"),))] = (
        unauthorized[0][0] if unauthorized else 0
    )
    expected[("oyster_notifications_pending", ())] = portal.query(
        "SELECT count(*) FROM registry_admin_pendingevent"
    )[0][0]
    durations = {}
    for kind, state, started, finished in portal.query(
        "SELECT kind, state, started_at, finished_at FROM registry_admin_run "
        "WHERE state IN ('done', 'failed')"
    ):
        key = ("oyster_job_runs_total", (("kind", kind), ("outcome", state)))
        expected[key] = expected.get(key, 0) + 1
        durations.setdefault(kind, []).append(seconds_between(started, finished))
    for kind, seconds in durations.items():
        expected[("oyster_job_duration_seconds_count", (("kind", kind),))] = len(seconds)
        expected[("oyster_job_duration_seconds_sum", (("kind", kind),))] = pytest.approx(
            sum(seconds), abs=0.001
        )
    snapshot_id, total, reclaimable = portal.query(
        "SELECT id, total_bytes, reclaimable_bytes FROM registry_admin_storagesnapshot "
        "ORDER BY created_at DESC, id DESC LIMIT 1"
    )[0]
    expected[("oyster_storage_bytes", ())] = total
    expected[("oyster_storage_reclaimable_bytes", ())] = reclaimable
    for name, size in portal.query(
        "SELECT name, referenced_bytes FROM registry_admin_repositorystorage "
        "WHERE snapshot_id = ? ORDER BY referenced_bytes DESC, name LIMIT 10",
        (snapshot_id,),
    ):
        expected[("oyster_storage_repository_bytes", (("repository", name),))] = size
    expected[("oyster_repositories", ())] = portal.query(
        "SELECT count(*) FROM registry_admin_repository WHERE is_empty = 0"
    )[0][0]
    expected[("oyster_repositories_empty", ())] = portal.query(
        "SELECT count(*) FROM registry_admin_repository WHERE is_empty = 1"
    )[0][0]
    expected[("oyster_tags", ())] = portal.query("SELECT count(*) FROM registry_admin_tag")[0][0]
    return expected


def test_metrics_match_the_database_with_two_gunicorn_workers(tmp_path):
    require_binary(PROMTOOL, "install Debian's package: apt-get install prometheus")
    require_binary(SKOPEO_BINARY, "install Debian's package: apt-get install skopeo")
    portal = PortalProcess(
        tmp_path / "portal",
        workers=2,
        extra_env={
            "METRICS_TOKEN": METRICS_TOKEN,
            "PORTAL_ADMIN_PASSWORD": ADMIN_PASSWORD,
            # The login page renders hashed static names, as in the image.
            "STATIC_ROOT": str(tmp_path / "static"),
        },
    )
    registry = start_registry(tmp_path / "registry", portal.url)
    portal.env.update(
        {
            "REGISTRY_URL": registry.url,
            "REGISTRY_USERNAME": SERVICE_USER,
            "REGISTRY_PASSWORD": SERVICE_PASSWORD,
            "HTPASSWD_PATH": str(registry.htpasswd_path),
            "STORAGE_BACKEND": "filesystem",
            "STORAGE_FILESYSTEM_ROOT": str(registry.storage_root),
        }
    )
    try:
        portal.manage("migrate", "--noinput", "-v0")
        portal.manage("ensure_admin")
        portal.manage("collectstatic", "--noinput", "-v0")
        portal.start()

        # Push: three images into two repositories, with skopeo as a client would.
        skopeo = Skopeo(binary=SKOPEO_BINARY, registry_url=registry.url)
        for repository, tag in (("metrics/app", "v1"), ("metrics/app", "v2"), ("metrics/db", "1")):
            layout = tmp_path / "layouts" / f"{repository.replace('/', '-')}-{tag}"
            write_oci_layout(str(layout), build_image(seed=f"{repository}:{tag}"), tag)
            copied = skopeo.copy_to_registry(layout, tag, repository, PUSH_USER, PUSH_PASSWORD)
            assert copied.returncode == 0, copied.stderr
        settled(portal)

        # Delete a tag through Oyster (its last tag: the image goes too), then scan.
        portal.manage("delete_tag", "metrics/app:v2")
        portal.manage("scan_storage")
        # A delivery with a wrong token, and a failed login.
        refused = requests.post(
            f"{portal.url}/api/registry/events",
            data=b'{"events": []}',
            headers={"Authorization": "Bearer wrong"},
            timeout=10,
        )
        assert refused.status_code == 401
        fail_a_login(portal)
        settled(portal)

        first = scrape(portal)
        assert first.status_code == 200, first.text[:500]
        checked = subprocess.run(
            [PROMTOOL, "check", "metrics"],
            input=first.text,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr

        expected = expected_from_database(portal)
        # The script did what it says: two tags left, one refused delivery, one scan run.
        assert expected[("oyster_tags", ())] == 2
        assert expected[("oyster_notifications_received_total", (("action", "delete"),))] >= 1
        assert expected[("oyster_job_runs_total", (("kind", "storage_scan"), ("outcome", "done")))]

        bodies, answer_times = set(), set()
        # In concurrent rounds: a sync worker busy with one scrape leaves the next to the other
        # (one at a time, the same worker often takes them all).
        responses = []
        with ThreadPoolExecutor(max_workers=4) as pool:
            for _ in range(20):
                responses += pool.map(lambda _: scrape(portal), range(4))
                times = {parse(r.text).get((PER_PROCESS, ())) for r in responses if r.ok}
                if len(responses) >= 32 and len(times) >= 2:
                    break
        for response in responses:
            assert response.status_code == 200
            values = parse(response.text)
            for key, value in expected.items():
                assert values.get(key) == value, (key, values.get(key), value)
            assert values[("oyster_registry_up", ())] == 1
            assert values[("oyster_login_failures_total", ())] == 1
            assert values[("oyster_notifications_apply_lag_seconds", ())] == 0
            answer_times.add(values[(PER_PROCESS, ())])
            bodies.add(
                "\n".join(line for line in response.text.splitlines() if PER_PROCESS not in line)
            )
        # Each worker keeps its own ping, so two answer times show that both workers answered;
        # everything else was the same from both.
        assert len(answer_times) >= 2, f"one gunicorn worker answered all {len(responses)} scrapes"
        assert len(bodies) == 1

        # Without the token, or with a wrong one: 401 from the loopback address too.
        assert requests.get(f"{portal.url}/metrics", timeout=10).status_code == 401
        assert scrape(portal, token="wrong").status_code == 401
        oversized = requests.get(
            f"{portal.url}/metrics", headers={"Authorization": "Bearer " + "a" * 6000}, timeout=10
        )
        assert oversized.status_code == 400
        # Nothing secret in what a scrape shows.
        for secret in (METRICS_TOKEN, SERVICE_PASSWORD, PUSH_PASSWORD, ADMIN_PASSWORD, "pusher"):
            assert secret not in first.text
    finally:
        portal.stop()
        registry.stop()
