"""Mixed load: webhook senders and logged-in page readers at once, for 60 s, under gunicorn.

    .venv/bin/python bench/load.py                 # 60 s of load (about 2 minutes in all)
    .venv/bin/python bench/load.py --seconds 15    # shorter, for a smoke run

The portal runs as deployed: gunicorn with 2 workers x 4 threads (docker/entrypoint.sh), the
production settings and a SQLite file database (tests/portal_process.py), in front of a live
Debian docker-registry (the dashboard pings it on every view). Before the load the audit log
holds --prefill real events (stored through notifications.record; the first 2,000 also update
the repository index, which they fill).

During the load:
- --senders threads POST notification envelopes to /api/registry/events, one event each as
  2.8.2 sends them, cycling through every captured payload shape in
  registry_admin/tests/payloads/ (pushes, pulls, HEADs, mounts, deletes) with a fresh event id;
  5 % of the posts re-send an event already sent (the registry's retry), so the duplicate path
  runs under load too;
- --readers threads, each logged in as a viewer through the login form, read the dashboard,
  the repositories list, the audit log and an audit search, in turn.

Errors are answers other than 200 and transport failures (goal: 0). Afterwards the database
must hold exactly the unique events sent: zero lost, zero duplicated.

The baseline is /healthz (no database, no registry) from the same number of client threads on
the same server, measured before and after the load in the same run; each request type's p50 is
given as a multiple of its p50, and the whole load's throughput as a share of its throughput.
The load generator shares the 2 cores with the server.
"""

import argparse
import itertools
import json
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import common
import requests

sys.path.insert(0, str(common.REPO_ROOT))

PAYLOADS = common.REPO_ROOT / "registry_admin" / "tests" / "payloads"
EVENTS_PATH = "/api/registry/events"
SECTION = "load"
REDELIVERY_SHARE = 0.05
PAGES = {
    "dashboard": "/",
    "repositories list": "/repositories/",
    "audit log": "/audit/",
    "audit search": "/audit/?q={term}",
}
SEARCH_TERMS = ["load/app-7", "pusher", "sha256:4027", "v1-docker", "skopeo", "nothing-matches"]
VIEWER = ("load-viewer", "load-viewer-password-1")
INDEXED_PREFILL = 2000


class Envelopes:
    """One-event envelopes in every captured shape, each with a fresh id (ids are remembered)."""

    def __init__(self):
        documents = [json.loads(path.read_text()) for path in sorted(PAYLOADS.glob("*.json"))]
        self.shapes = [
            doc for doc in documents if isinstance(doc, dict) and len(doc.get("events", [])) == 1
        ]
        self.counter = itertools.count()
        self.lock = threading.Lock()
        self.sent_ids = set()

    def make(self):
        with self.lock:
            number = next(self.counter)
        envelope = json.loads(json.dumps(self.shapes[number % len(self.shapes)]))
        event = envelope["events"][0]
        event["id"] = str(uuid.uuid4())
        event["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        event["target"]["repository"] = f"load/app-{number % 40}"
        return event["id"], json.dumps(envelope).encode()


class Recorder:
    def __init__(self):
        self.samples, self.lock = [], threading.Lock()

    def add(self, kind, seconds, ok):
        with self.lock:
            self.samples.append((kind, seconds, ok))


def timed(recorder, kind, call):
    started = time.perf_counter()
    try:
        response = call()
        ok = response.status_code == 200
    except requests.RequestException:
        ok = False
    recorder.add(kind, time.perf_counter() - started, ok)


def sender(base, token, envelopes, recorder, stop, seed):
    rng = random.Random(seed)
    session = requests.Session()
    headers = {
        "Content-Type": "application/vnd.docker.distribution.events.v1+json",
        "Authorization": f"Bearer {token}",
    }
    sent = []
    while not stop.is_set():
        if sent and rng.random() < REDELIVERY_SHARE:
            body, kind = rng.choice(sent), "webhook (redelivery)"
        else:
            event_id, body = envelopes.make()
            with envelopes.lock:
                envelopes.sent_ids.add(event_id)
            sent.append(body)
            kind = "webhook"
        timed(
            recorder,
            kind,
            lambda body=body: session.post(
                base + EVENTS_PATH, data=body, headers=headers, timeout=60
            ),
        )


def logged_in_session(base):
    session = requests.Session()
    page = session.get(base + "/login/", timeout=30)
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert found, (page.status_code, page.url, page.text[:3000])
    token = found.group(1)
    response = session.post(
        base + "/login/",
        data={"username": VIEWER[0], "password": VIEWER[1], "csrfmiddlewaretoken": token},
        headers={"Referer": base + "/login/"},
        timeout=30,
        allow_redirects=False,
    )
    assert response.status_code == 302, response.text[-500:]
    return session


def reader(base, recorder, stop, seed):
    rng = random.Random(seed)
    session = logged_in_session(base)
    pages = itertools.cycle(PAGES.items())
    for _ in range(seed):  # readers start at different pages
        next(pages)
    while not stop.is_set():
        kind, path = next(pages)
        url = base + path.format(term=rng.choice(SEARCH_TERMS))
        timed(recorder, kind, lambda url=url: session.get(url, timeout=60))


def healthz(base, recorder, stop, seed):
    session = requests.Session()
    while not stop.is_set():
        timed(recorder, "/healthz", lambda: session.get(base + "/healthz", timeout=60))


def run_threads(targets, seconds):
    """Start every (function, args) at once, stop them after `seconds`; returns the samples."""
    recorder, stop = Recorder(), threading.Event()
    threads = [
        threading.Thread(target=function, args=(*args, recorder, stop, i + 1))
        for i, (function, args) in enumerate(targets)
    ]
    common.run_for(threads, seconds, stop, 120)
    return recorder.samples, seconds


def summarize(samples, seconds):
    by_kind = {}
    for kind, latency, ok in samples:
        by_kind.setdefault(kind, []).append((latency, ok))
    return {
        kind: {
            "requests": len(rows),
            "per_second": len(rows) / seconds,
            "p50_ms": 1000 * statistics.median(latency for latency, _ in rows),
            "p99_ms": 1000 * common.percentile([latency for latency, _ in rows], 0.99),
            "errors": sum(1 for _, ok in rows if not ok),
        }
        for kind, rows in by_kind.items()
    }


# --- setup --------------------------------------------------------------------------------------


def start_registry(root):
    """A registry of our own, notifications off (our senders play the registry)."""
    from registry_admin.tests import harness

    reg = harness.start_registry(root, "http://127.0.0.1:9")
    import yaml

    config = yaml.safe_load(reg.config_path.read_text())
    del config["notifications"]
    reg.restart(config)
    pusher = reg.pusher()
    from registry_admin.tests.images import build_image

    pusher.push_image("load/app-0", "v1", build_image(seed="load"))
    return reg


def start_portal(root, reg):
    from registry_admin.tests import harness
    from tests.portal_process import PortalProcess

    portal = PortalProcess(
        Path(root) / "portal",
        workers=2,
        threads=4,
        extra_env={
            "REGISTRY_URL": reg.url,
            "REGISTRY_USERNAME": harness.SERVICE_USER,
            "REGISTRY_PASSWORD": harness.SERVICE_PASSWORD,
            "REGISTRY_TIMEOUT": "10",
            "HTPASSWD_PATH": str(reg.htpasswd_path),
            "STATIC_ROOT": str(Path(root) / "static"),
            "LOG_LEVEL": "ERROR",
        },
    )
    portal.manage("migrate", "--noinput", "-v0")
    # As the image does at build time: pages need the hashed static files' manifest.
    portal.manage("collectstatic", "--noinput", "-v0")
    return portal


# The events_recorded receivers (registry_admin/apps.py).
RECEIVERS = ("index", "pulls", "activity", "robots")


def prefill(portal, count, envelopes):
    """Store `count` events the way the webhook does (500 per delivery; the index updated for
    the first INDEXED_PREFILL) and create the viewer.

    Runs Django in this process against the portal's database, with the portal's settings."""
    os.environ.update(portal.env)
    import django

    django.setup()
    from django.contrib.auth.models import Group, User
    from django.test import override_settings

    from registry_admin import notifications, signals
    from registry_admin.roles import VIEWER_GROUP

    user = User.objects.create_user(username=VIEWER[0], password=VIEWER[1])
    user.groups.add(Group.objects.get(name=VIEWER_GROUP))
    # Applied in each delivery's transaction (no worker runs here).
    with override_settings(NOTIFICATIONS_APPLY_DELAY=0):
        for start in range(0, count, 500):
            batch = [
                json.loads(envelopes.make()[1])["events"][0] for _ in range(min(500, count - start))
            ]
            # The index holds 40 repositories, which the first events fill; the receivers on
            # every later one would only make the setup slow (about 5 ms an event).
            if start >= INDEXED_PREFILL:
                for uid in RECEIVERS:
                    signals.events_recorded.disconnect(dispatch_uid=uid)
            notifications.record(notifications.parse_envelope(json.dumps({"events": batch})))
    from django.db import connections

    connections.close_all()


def count_check(portal, sent_ids, prefilled):
    rows = [
        row[0]
        for row in portal.query(
            "SELECT event_id FROM registry_admin_auditevent WHERE source = ?", ("registry",)
        )
    ]
    stored = set(rows)
    return {
        "sent_unique": len(sent_ids),
        "stored_rows": len(rows) - prefilled,
        "lost": len(sent_ids - stored),
        "duplicated": len(rows) - len(stored),
        "unexpected": len(stored) - prefilled - len(sent_ids & stored),
    }


# --- report -------------------------------------------------------------------------------------


def report(result, args):
    load, base = result["load"], result["baseline"]
    kinds = ["webhook", "webhook (redelivery)", *PAGES]
    page_rows = [load[k] for k in PAGES if k in load]
    pages_total = {
        "requests": sum(r["requests"] for r in page_rows),
        "errors": sum(r["errors"] for r in page_rows),
    }
    total_rate = sum(r["per_second"] for r in load.values())
    check = result["check"]
    redeliveries = load.get("webhook (redelivery)", {}).get("requests", 0)
    lines = [
        f"<!-- {SECTION} -->",
        "## Mixed load (`bench/load.py`)",
        "",
        f"{common.today()}, {common.machine(sqlite=True, kernel=True)}; load average "
        f"{result['load_average']:.1f} at the start. gunicorn 2 workers x 4 threads, production "
        f"settings, SQLite file database with {args.prefill:,} events before the load, a live "
        f"local registry. {args.senders} webhook senders and {args.readers} logged-in page readers "
        f"(viewer) for {args.seconds:.0f} s; the load generator shares the 2 cores. Baseline: "
        f"/healthz from the same {args.senders + args.readers} threads, before and after the load "
        f"(mean), {base['per_second']:.0f} req/s, p50 {base['p50_ms']:.1f} ms, p99 "
        f"{base['p99_ms']:.1f} ms. Whole run {result['elapsed']:.0f} s.",
        "",
        "| request | requests | req/s | p50 ms | p99 ms | errors | p50 / healthz p50 |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in kinds:
        if kind in load:
            row = load[kind]
            lines.append(
                f"| {kind} | {row['requests']:,} | {row['per_second']:.1f} | {row['p50_ms']:.1f} "
                f"| {row['p99_ms']:.1f} | {row['errors']} | {row['p50_ms'] / base['p50_ms']:.1f} |"
            )
    lines += [
        "",
        f"All requests together: {total_rate:.0f} req/s, "
        f"{total_rate / base['per_second']:.2f} of the /healthz baseline's throughput; "
        f"{pages_total['requests']:,} page reads with {pages_total['errors']} errors. The readers "
        "and senders never pause, so the 2 cores stay saturated: every figure includes queueing "
        "behind the other requests, which is the point of this run.",
        "",
        f"Events: {check['sent_unique']:,} unique events posted and {redeliveries:,} "
        f"redeliveries; {check['stored_rows']:,} rows stored: **{check['lost']} lost, "
        f"{check['duplicated']} duplicated**, {check['unexpected']} unexpected.",
        f"<!-- /{SECTION} -->",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--prefill", type=int, default=20_000)
    parser.add_argument("--baseline-seconds", type=float, default=10)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    load_average = common.load_average()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="oyster-bench-load-") as root:
        reg = start_registry(Path(root) / "registry")
        portal = start_portal(root, reg)
        try:
            envelopes = Envelopes()
            prefill_started = time.monotonic()
            prefill(portal, args.prefill, envelopes)
            print(
                f"prefilled {args.prefill:,} events in {time.monotonic() - prefill_started:.0f} s"
            )
            prefilled = args.prefill
            envelopes.sent_ids.clear()
            portal.start()
            base_url = portal.url
            token = portal.env["NOTIFICATIONS_TOKEN"]
            threads = args.senders + args.readers
            # Warm-up: every worker imports everything and fills its caches.
            run_threads(
                [(reader, (base_url,)) for _ in range(args.readers)]
                + [(healthz, (base_url,)) for _ in range(args.senders)],
                3,
            )
            before = summarize(
                *run_threads([(healthz, (base_url,))] * threads, args.baseline_seconds)
            )
            load = summarize(
                *run_threads(
                    [(sender, (base_url, token, envelopes))] * args.senders
                    + [(reader, (base_url,))] * args.readers,
                    args.seconds,
                )
            )
            after = summarize(
                *run_threads([(healthz, (base_url,))] * threads, args.baseline_seconds)
            )
            time.sleep(1)  # let the last writes land
            check = count_check(portal, envelopes.sent_ids, prefilled)
        finally:
            portal.stop()
            reg.stop()
    baseline = {
        key: (before["/healthz"][key] + after["/healthz"][key]) / 2
        for key in ("per_second", "p50_ms", "p99_ms")
    }
    result = {
        "load": load,
        "baseline": baseline,
        "check": check,
        "load_average": load_average,
        "elapsed": time.monotonic() - started,
    }
    section = report(result, args)
    print(section)
    if not args.no_write:
        common.write_section(section, marker=SECTION)
        print(f"bench/README.md updated ({result['elapsed']:.0f} s)")
    errors = sum(row["errors"] for row in load.values())
    if errors or check["lost"] or check["duplicated"] or check["unexpected"]:
        sys.exit(f"errors {errors}, lost {check['lost']}, duplicated {check['duplicated']}")


if __name__ == "__main__":
    main()
