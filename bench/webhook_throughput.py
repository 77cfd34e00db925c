"""Notification endpoint benchmark: POST /api/registry/events under gunicorn, SQLite and PostgreSQL.

    .venv/bin/python bench/webhook_throughput.py           # both databases, about 2 minutes
    .venv/bin/python bench/webhook_throughput.py --quick   # smaller, for a smoke run

For each database a fresh portal (migrated) is served by gunicorn exactly as deployed: 2 workers,
4 threads each (docker/entrypoint.sh). Senders POST real 2.8.2 envelopes (tests/payloads/
push-manifest-oci.json with a fresh event id each) with keep-alive connections:

- "1 sender": one event at a time, as the registry delivers (its queue is sequential);
- "8 senders": concurrent senders (several registries, retries); 10 % of the requests are
  redeliveries of an event another sender posts at about the same moment, so the unique index
  and the duplicate path are exercised under contention.

The baseline is /bench/noop (bench/webhook/bench_urls.py) in the same server and run: same
middleware, token check and body read, no parsing or storing. Each phase runs no-op, endpoint,
no-op; the ratio is endpoint / mean of the two no-op runs. The goal's phase (one sender,
batched) runs 5 times and its median round is reported, with the range; on PostgreSQL it runs
3 more times on a server with DATABASE_PREPARED_STATEMENTS=0 (the INSERT parsed and planned on
every delivery, as before prepared statements). After the run the
database must hold exactly the unique events sent: zero lost, zero duplicated (count and id-set
check).

PostgreSQL comes from scripts/with-postgres.sh (Debian's server, throwaway, fsync off as in the
test suite); SQLite is the default file database in WAL mode.
"""

import argparse
import http.client
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import common

REPO_ROOT = common.REPO_ROOT
BENCH_DIR = Path(__file__).resolve().parent / "webhook"
PYTHON = str(REPO_ROOT / ".venv" / "bin" / "python")
GUNICORN = str(REPO_ROOT / ".venv" / "bin" / "gunicorn")
PAYLOAD = REPO_ROOT / "registry_admin" / "tests" / "payloads" / "push-manifest-oci.json"
TOKEN = "bench-token-" + "x" * 32
WEBHOOK, NOOP = "/api/registry/events", "/bench/noop"
# The webhook in servers started with other settings (bench/webhook/bench_urls.py).
INLINE = {"NOTIFICATIONS_APPLY_DELAY": "0"}
AUDIT_ONLY = {"NOTIFICATIONS_APPLY_DELAY": "0", "BENCH_RECEIVERS": "off"}
# How long the bench waits for the batched step to apply what was stored (goal: 2 s).
DRAIN_TIMEOUT = 30
PAYLOADS = REPO_ROOT / "registry_admin" / "tests" / "payloads"
SECTION = "## webhook_throughput.py"


class Bodies:
    """Envelopes with fresh event ids, all for repositories under bench/ (the count check)."""

    def __init__(self):
        self.template = json.loads(PAYLOAD.read_text())
        self.made = 0
        # The audit-only phase pushes elsewhere: its events never reach the index.
        self.prefix = "bench/app-"

    def make(self):
        envelope = json.loads(json.dumps(self.template))
        event = envelope["events"][0]
        event["id"] = str(uuid.uuid4())
        event["timestamp"] = datetime.now(UTC).isoformat()
        event["target"]["repository"] = f"{self.prefix}{self.made % 50}"
        self.made += 1
        return json.dumps(envelope).encode()


class PullBurst:
    """A cluster pulling images: per node, the real 2.8.2 events of one pull as containerd makes
    it (HEAD of the tag, GET of the manifest by digest, then a GET per blob), each node its own
    user and address. Manifest GETs are the events the pull counters act on; every one here
    takes the look-back path (a GET by digest after a HEAD)."""

    def __init__(self, blobs=3):
        load = lambda name: json.loads((PAYLOADS / name).read_text())["events"][0]  # noqa: E731
        self.head = load("pull-manifest-head.json")
        self.get = load("pull-manifest-by-digest.json")
        self.blob = load("pull-blob.json")
        self.blobs = blobs
        self.nodes = 0
        # Pulls sent while the counters are off go to other repositories (the rebuild check).
        self.prefix = "bench/pulled-"

    def make_pull(self):
        """The bodies of one node's pull, in order."""
        self.nodes += 1
        node, repository = self.nodes, f"{self.prefix}{self.nodes % 20}"
        now = datetime.now(UTC).isoformat()
        bodies = []
        for template in [self.head, self.get] + [self.blob] * self.blobs:
            event = json.loads(json.dumps(template))
            event["id"] = str(uuid.uuid4())
            event["timestamp"] = now
            event["target"]["repository"] = repository
            event["target"]["digest"] = self.get["target"]["digest"]
            event["actor"] = {"name": f"node-{node % 200}"}
            event["request"]["addr"] = f"10.1.{node % 250}.{node % 200}:{30000 + node % 30000}"
            bodies.append(json.dumps({"events": [event]}).encode())
        return bodies

    def plan(self, requests):
        bodies = []
        while len(bodies) < requests:
            bodies.extend(self.make_pull())
        return [bodies[:requests]]


def run_pull_phases(start_server, db, requests, rounds=2):
    """The same kind of pull burst with the pull counters' receiver off and on (a server
    each, started in turn, `rounds` times): per-event time is (sending + applying the batch)
    / events; per-event CPU counts every process (web, worker, database, sender) over the
    same span. The ratio counters on / off is taken on CPU: the wall time's end waits for
    the applier's next round (up to `NOTIFICATIONS_APPLY_DELAY`), which is noise here."""
    burst = PullBurst()
    results = {"off": [], "on": []}
    for _ in range(rounds):
        for mode in ("off", "on"):
            burst.prefix = "bench/pulled-off-" if mode == "off" else "bench/pulled-"
            with start_server({"BENCH_PULL_COUNTERS": mode}) as port:
                plans = burst.plan(requests)
                note_endpoint_ids(plans)
                cpu_before = cpu_seconds()
                latencies, wall, statuses = send_all(port, WEBHOOK, plans)
                lag = db.drain()
                cpu = cpu_per_request(cpu_before, cpu_seconds(), len(latencies))
                results[mode].append(
                    {
                        "cpu_ms_per_event": sum(cpu.values()),
                        "ms_per_event": 1000 * (wall + lag) / len(latencies),
                        "lag_s": lag,
                        **summary(latencies, wall, statuses),
                    }
                )
    off = statistics.mean(r["ms_per_event"] for r in results["off"])
    on = statistics.mean(r["ms_per_event"] for r in results["on"])
    cpu_off = statistics.mean(r["cpu_ms_per_event"] for r in results["off"])
    cpu_on = statistics.mean(r["cpu_ms_per_event"] for r in results["on"])
    return {
        "requests": requests,
        "rounds": rounds,
        "off": results["off"],
        "on": results["on"],
        "off_ms": off,
        "on_ms": on,
        "cpu_off_ms": cpu_off,
        "cpu_on_ms": cpu_on,
        "ratio": cpu_on / cpu_off,
    }


def send_all(port, path, plans):
    """Each plan (a list of bodies) is sent by its own thread on one keep-alive connection.
    Returns (latencies in seconds, wall seconds, status counts)."""
    latencies, statuses, lock = [], {}, threading.Lock()
    start_gate = threading.Barrier(len(plans) + 1)

    def sender(bodies):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, codes = [], {}
        start_gate.wait()
        for body in bodies:
            started = time.perf_counter()
            conn.request(
                "POST",
                path,
                body=body,
                headers={
                    "Content-Type": "application/vnd.docker.distribution.events.v1+json",
                    "Authorization": f"Bearer {TOKEN}",
                },
            )
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            codes[response.status] = codes.get(response.status, 0) + 1
        conn.close()
        with lock:
            latencies.extend(mine)
            for code, n in codes.items():
                statuses[code] = statuses.get(code, 0) + n

    threads = [threading.Thread(target=sender, args=(plan,)) for plan in plans]
    for thread in threads:
        thread.start()
    start_gate.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - started, statuses


def plans_for(bodies, senders, requests, duplicate_share=0.1):
    """`senders` lists of bodies. With duplicates, every even sender re-sends, in some of its
    slots, the body its odd neighbour posts in the same slot (a near-simultaneous redelivery);
    `duplicate_share` of all requests are such redeliveries."""
    per_sender = requests // senders
    fresh = [[bodies.make() for _ in range(per_sender)] for _ in range(senders)]
    if senders < 2 or not duplicate_share:
        return fresh
    every = max(1, round(1 / (2 * duplicate_share)))  # only half the senders re-send
    plans = []
    for i, own in enumerate(fresh):
        if i % 2 or i + 1 >= senders:
            plans.append(own)
            continue
        neighbour = fresh[i + 1]
        plans.append(
            [neighbour[j] if j % every == every - 1 else own[j] for j in range(per_sender)]
        )
    return plans


def summary(latencies, wall, statuses, events=None, lag=0.0):
    """`per_second`: answers per second (how fast the registry's queue drains); `lag`: seconds
    after the last answer until every stored event was applied to the index and the counters,
    counted in by `applied_per_second` (the rate the whole work keeps up with)."""
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "per_second": len(latencies) / wall,
        "applied_per_second": len(latencies) / (wall + lag),
        "events_per_second": (events / wall) if events is not None else None,
        "lag_s": lag,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "statuses": statuses,
    }


ENDPOINT_NAMES = {WEBHOOK: "webhook (batched index and counters)"}
AUDIT_ONLY_NAME = "webhook without index handler, in a transaction of its own"
INLINE_NAME = "webhook, index and counters in the request (APPLY_DELAY=0)"
UNPREPARED = "webhook (batched), INSERT not prepared (DATABASE_PREPARED_STATEMENTS=0)"


def cpu_seconds():
    """CPU seconds (user + system) so far of each process group of the arrangement: the web
    server (gunicorn), the worker (run_worker), the database server (PostgreSQL's processes)
    and the sender (this process). Where a request's time goes, on the 2 shared cores."""
    tick = os.sysconf("SC_CLK_TCK")
    groups = {"web": 0.0, "worker": 0.0, "database": 0.0}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        group = (
            "web"
            if "gunicorn" in command
            else "worker"
            if "run_worker" in command
            else "database"
            if command.startswith("postgres")
            else None
        )
        if group:
            groups[group] += (int(fields[11]) + int(fields[12])) / tick
    groups["sender"] = time.process_time()
    return groups


def cpu_per_request(before, after, requests):
    return {k: 1000 * (after[k] - before[k]) / requests for k in before}


def run_phase(port, db, bodies, senders, requests, endpoint=WEBHOOK):
    noop_plans = plans_for(bodies, senders, requests, duplicate_share=0)
    cpu_before = cpu_seconds()
    before = summary(*send_all(port, NOOP, noop_plans))
    noop_cpu = cpu_per_request(cpu_before, cpu_seconds(), requests)
    plans = plans_for(bodies, senders, requests)
    unique_in_phase = len({body for plan in plans for body in plan})
    redeliveries = sum(len(plan) for plan in plans) - unique_in_phase
    note_endpoint_ids(plans)
    cpu_before = cpu_seconds()
    latencies, wall, statuses = send_all(port, endpoint, plans)
    webhook = summary(latencies, wall, statuses, events=unique_in_phase, lag=db.drain())
    webhook["cpu_ms"] = cpu_per_request(cpu_before, cpu_seconds(), requests)
    webhook["noop_cpu_ms"] = noop_cpu
    after = summary(*send_all(port, NOOP, plans_for(bodies, senders, requests, duplicate_share=0)))
    noop_rate = (before["per_second"] + after["per_second"]) / 2
    return {
        "senders": senders,
        "endpoint": ENDPOINT_NAMES[endpoint],
        "noop": {
            "per_second": noop_rate,
            "p50_ms": (before["p50_ms"] + after["p50_ms"]) / 2,
            "p99_ms": (before["p99_ms"] + after["p99_ms"]) / 2,
        },
        "webhook": webhook,
        "ratio": webhook["per_second"] / noop_rate,
        "sent_unique": unique_in_phase,
        "redeliveries": redeliveries,
    }


# Rounds of the one-sender batched phase (no-op, webhook, no-op each); the median is reported.
HEADLINE_ROUNDS = 5


def median_round(rounds):
    """The round with the median ratio (its figures belong together), with every round's ratio;
    redeliveries of all rounds count in the stored-rows check."""
    chosen = dict(sorted(rounds, key=lambda phase: phase["ratio"])[len(rounds) // 2])
    chosen["round_ratios"] = [phase["ratio"] for phase in rounds]
    chosen["redeliveries"] = sum(phase["redeliveries"] for phase in rounds)
    return chosen


def machine():
    return common.machine(kernel=True)


def prepare_database(env):
    if not env.get("DATABASE_URL"):
        return f"SQLite {sqlite3.sqlite_version} (file, WAL)"
    import psycopg

    url = env["DATABASE_URL"]
    server, _, name = url.rpartition("/")
    with psycopg.connect(server + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
        version = conn.execute("SHOW server_version").fetchone()[0]
    return f"PostgreSQL {version} (fsync off)"


class Database:
    """The bench's own look at the portal's database: pending events, from outside Django."""

    def __init__(self, env):
        self.env = env

    def _pending(self):
        query = "SELECT COUNT(*) FROM registry_admin_pendingevent"
        if self.env.get("DATABASE_URL"):
            import psycopg

            with psycopg.connect(self.env["DATABASE_URL"], autocommit=True) as conn:
                return conn.execute(query).fetchone()[0]
        with sqlite3.connect(Path(self.env["DATA_DIR"]) / "oyster.sqlite3", timeout=30) as conn:
            return conn.execute(query).fetchone()[0]

    def drain(self):
        """Seconds until no event is pending (polled every 10 ms)."""
        started = time.perf_counter()
        while self._pending():
            if time.perf_counter() - started > DRAIN_TIMEOUT:
                raise RuntimeError(f"events still pending after {DRAIN_TIMEOUT} s")
            time.sleep(0.01)
        return time.perf_counter() - started


def gunicorn(env):
    """A context manager: gunicorn serving the portal (2 workers x 4 threads) on a free port,
    and the portal's worker beside it (it applies the stored events), as deployed."""
    import contextlib

    @contextlib.contextmanager
    def serve(extra=None):
        port = common.free_port()
        server = subprocess.Popen(
            [
                GUNICORN,
                "portal.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--log-level",
                "warning",
                "--no-control-socket",
            ],
            cwd=REPO_ROOT,
            env={**env, **(extra or {})},
        )
        jobs = subprocess.Popen(
            [PYTHON, "manage.py", "run_worker"],
            cwd=REPO_ROOT,
            env={
                **env,
                **(extra or {}),
                "SYNC_INTERVAL": "0",
                "STORAGE_SCAN_INTERVAL": "0",
                "AUDIT_PRUNE_INTERVAL": "0",
                "RETENTION_INTERVAL": "0",
            },
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("gunicorn did not start") from None
                    time.sleep(0.1)
            # Warm-up: both workers import everything and open their database connections.
            send_all(port, NOOP, plans_for(Bodies(), 4, 100, duplicate_share=0))
            yield port
        finally:
            for process in (server, jobs):
                process.send_signal(signal.SIGTERM)
            for process in (server, jobs):
                process.wait(30)

    return serve


def run_backend(quick):
    """Serve a fresh portal with gunicorn, run the phases, check the counts. Returns a dict."""
    data_dir = tempfile.mkdtemp(prefix="oyster-bench-webhook-")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NOTIFICATIONS_")},
        "DATA_DIR": data_dir,
        "SECRET_KEY": "bench-" + "s" * 50,
        "DEBUG": "0",
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "NOTIFICATIONS_TOKEN": TOKEN,
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "bench_settings",
        "PYTHONPATH": f"{BENCH_DIR}:{REPO_ROOT}",
    }
    database = prepare_database(env)
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO_ROOT, env=env, check=True
    )
    db, serve = Database(env), gunicorn(env)
    bodies = Bodies()

    def warm(port):
        # Every connection of both workers runs the INSERT often enough to have it prepared.
        plans = plans_for(bodies, 4, 200, duplicate_share=0)
        note_endpoint_ids(plans)
        send_all(port, WEBHOOK, plans)
        db.drain()

    n = 300 if quick else 2000
    with serve() as port:
        warm(port)
        # The goal's phase, several times: one round lasts a few seconds, and a neighbour's
        # burst on this shared machine moves a single round's ratio by several hundredths.
        sequential = median_round(
            [run_phase(port, db, bodies, 1, n) for _ in range(1 if quick else HEADLINE_ROUNDS)]
        )
        concurrent = run_phase(port, db, bodies, 8, 800 if quick else 2000)
    with serve(INLINE) as port:
        warm(port)
        inline = run_phase(port, db, bodies, 1, n) | {"endpoint": INLINE_NAME}
    bodies.prefix = "bench/audit-only-"
    with serve(AUDIT_ONLY) as port:
        warm(port)
        audit_only = run_phase(port, db, bodies, 1, n) | {"endpoint": AUDIT_ONLY_NAME}
    bodies.prefix = "bench/app-"
    phases = [sequential, inline, audit_only, concurrent]
    if env.get("DATABASE_URL"):
        # PostgreSQL: the goal's phase again with the INSERT not prepared, the figure before
        # prepared statements, in the same run.
        with serve({"DATABASE_PREPARED_STATEMENTS": "0"}) as port:
            warm(port)
            unprepared = median_round(
                [run_phase(port, db, bodies, 1, n) for _ in range(1 if quick else 3)]
            )
        unprepared["endpoint"] = UNPREPARED
        phases.append(unprepared)
    pull_burst = run_pull_phases(serve, db, 250 if quick else 1000, rounds=2 if quick else 3)
    return {
        "database": database,
        "phases": phases,
        "pulls": pull_burst,
        "check": count_check(env, bodies),
    }


# Run in the portal (manage.py shell) after the phases: every pushed tag points at its newest
# push, and the live pull counters equal those rebuilt from the audit log.
INDEX_AND_COUNTERS_CHECK = """
from django.db.models import Max, Sum
from registry_admin import pulls
from registry_admin.models import AuditEvent, PendingEvent, PullCount, Tag
def index_check():
    newest = dict(AuditEvent.objects.filter(repository__startswith='bench/app-', action='push')
        .values_list('repository').annotate(t=Max('timestamp')))
    tags = dict(Tag.objects.filter(repository__name__startswith='bench/app-')
        .values_list('repository__name', 'pushed_at'))
    return {'repositories': len(newest), 'stale': sum(tags.get(r) != t for r, t in newest.items()),
        'pending': PendingEvent.objects.count()}
def counters_check():
    live = {(k.scope, k.repository, k.ref, k.actor, str(k.day)): k.pulls
        for k in PullCount.objects.filter(repository__startswith='bench/pulled-')
        .exclude(repository__startswith='bench/pulled-off-')}
    events = pulls._candidates().filter(repository__startswith='bench/pulled-').exclude(
        repository__startswith='bench/pulled-off-')
    rebuilt = {(str(k[0]), k[1], k[2], k[3], str(k[4])): v[0]
        for k, v in pulls.count_events(list(events)).items()}
    return {'live_pulls': sum(live.values()), 'rebuilt_pulls': sum(rebuilt.values()),
        'equal': live == rebuilt}
"""


def count_check(env, bodies):
    """Every event id sent to the endpoint is stored exactly once (bench/ repositories only; the
    no-op bodies were never stored, so compare against the ids the endpoint received)."""
    script = (
        "import json,sys;"
        "from registry_admin.models import AuditEvent, RejectedDelivery;"
        "qs = AuditEvent.objects.filter(repository__startswith='bench/');"
        "ids = list(qs.values_list('event_id', flat=True));"
        "print('COUNTS', json.dumps({'rows': len(ids), 'distinct': len(set(ids)), 'ids': ids,"
        " 'rejected': RejectedDelivery.objects.count(), 'index': index_check(),"
        " 'counters': counters_check()}))"
    )
    script = INDEX_AND_COUNTERS_CHECK + script
    out = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    [line] = [line for line in out.splitlines() if line.startswith("COUNTS ")]
    stored = json.loads(line.removeprefix("COUNTS "))
    sent = ENDPOINT_IDS
    stored_ids = set(stored["ids"])
    return {
        "sent_unique": len(sent),
        "stored_rows": stored["rows"],
        "lost": len(sent - stored_ids),
        "duplicated": stored["rows"] - stored["distinct"],
        "unexpected": len(stored_ids - sent),
        "rejected_deliveries": stored["rejected"],
        "index": stored["index"],
        "counters": stored["counters"],
    }


# Ids of the events posted to the endpoint (not to the no-op), for the count check.
ENDPOINT_IDS = set()


def note_endpoint_ids(plans):
    for plan in plans:
        for body in plan:
            ENDPOINT_IDS.add(json.loads(body)["events"][0]["id"])


def table(results):
    lines = [
        "| database | endpoint | senders | req/s | events/s | p50 ms | p99 ms | lag s | req/s until applied | no-op req/s | no-op p50 / p99 ms | req/s ratio to no-op | until applied |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for phase in result["phases"]:
            w, n = phase["webhook"], phase["noop"]
            lines.append(
                f"| {result['database']} | {phase['endpoint']} | {phase['senders']} | "
                f"{w['per_second']:.0f} | "
                f"{w['events_per_second']:.0f} | {w['p50_ms']:.1f} | {w['p99_ms']:.1f} | "
                f"{w['lag_s']:.2f} | {w['applied_per_second']:.0f} | "
                f"{n['per_second']:.0f} | {n['p50_ms']:.1f} / {n['p99_ms']:.1f} | "
                f"**{phase['ratio']:.2f}** | {w['applied_per_second'] / n['per_second']:.2f} |"
            )
    return "\n".join(lines)


def checks(results):
    lines = []
    for result in results:
        c = result["check"]
        statuses = {}
        for phase in result["phases"]:
            for code, n in phase["webhook"]["statuses"].items():
                statuses[code] = statuses.get(code, 0) + n
        redeliveries = sum(phase.get("redeliveries", 0) for phase in result["phases"])
        lines.append(
            f"- {result['database']}: {c['sent_unique']} unique events posted and "
            f"{redeliveries} redeliveries, "
            f"{c['stored_rows']} rows stored: **{c['lost']} lost, {c['duplicated']} duplicated**, "
            f"{c['unexpected']} unexpected, {c['rejected_deliveries']} rejected deliveries; "
            f"HTTP statuses {statuses}. Index: {c['index']['repositories']} pushed tags, "
            f"{c['index']['stale']} not at their newest push, {c['index']['pending']} events "
            f"left pending; pull counters: {c['counters']['live_pulls']} live, "
            f"{c['counters']['rebuilt_pulls']} rebuilt from the audit log, "
            f"{'equal' if c['counters']['equal'] else 'NOT EQUAL'}."
        )
    return "\n".join(lines)


def cpu_table(results):
    """Where one request's time goes: CPU ms per request of each process, one sender."""
    lines = [
        "| database | endpoint | web | worker | database | sender | all | wall ms per request |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for phase in result["phases"]:
            if phase["senders"] != 1 or "cpu_ms" not in phase["webhook"]:
                continue
            rows = [("no-op", phase["webhook"]["noop_cpu_ms"], 1000 / phase["noop"]["per_second"])]
            rows.append(
                (
                    phase["endpoint"],
                    phase["webhook"]["cpu_ms"],
                    1000 / phase["webhook"]["per_second"],
                )
            )
            for name, cpu, wall in rows:
                if name == "no-op" and phase is not result["phases"][0]:
                    continue
                lines.append(
                    f"| {result['database'].split(' (')[0]} | {name} | {cpu['web']:.2f} | "
                    f"{cpu['worker']:.2f} | {cpu['database']:.2f} | {cpu['sender']:.2f} | "
                    f"{sum(cpu.values()):.2f} | {wall:.2f} |"
                )
    return "\n".join(lines)


def pull_table(results):
    lines = [
        "| database | events per phase x rounds | ms per event, counters off | ms per event, counters on | CPU ms per event off / on | p50 ms off / on | p99 ms off / on | CPU ratio on / off |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        p = result["pulls"]
        p50 = [statistics.mean(r["p50_ms"] for r in p[k]) for k in ("off", "on")]
        p99 = [statistics.mean(r["p99_ms"] for r in p[k]) for k in ("off", "on")]
        lines.append(
            f"| {result['database']} | {p['requests']} x {p['rounds']} | {p['off_ms']:.2f} | "
            f"{p['on_ms']:.2f} | {p['cpu_off_ms']:.2f} / {p['cpu_on_ms']:.2f} | "
            f"{p50[0]:.1f} / {p50[1]:.1f} | {p99[0]:.1f} / {p99[1]:.1f} | "
            f"**{p['ratio']:.2f}** |"
        )
    return "\n".join(lines)


def notes(results):
    """Sentences that read the table: the goal, and where the time goes."""
    lines = []
    for result in results:
        batched, inline, audit_only, _, *unprepared = result["phases"]
        lags = [p["webhook"]["lag_s"] for p in result["phases"]]
        lags += [r["lag_s"] for k in ("off", "on") for r in result["pulls"][k]]
        ratios = batched.get("round_ratios", [batched["ratio"]])
        lines.append(
            f"- {result['database'].split(' (')[0]}: one sender (the registry's own regime) at "
            f"**{batched['ratio']:.2f}** of the no-op rate with the index and counters batched "
            f"(goal >= 0.4; median of {len(ratios)} rounds, each {min(ratios):.2f}–"
            f"{max(ratios):.2f}), {inline['ratio']:.2f} with them in each request, "
            f"{audit_only['ratio']:.2f} storing the audit row in a transaction of its own "
            f"without the index (the pre-batching shape); p99 "
            f"{batched['webhook']['p99_ms']:.0f} ms. Last batch applied at most "
            f"{max(lags):.2f} s after the last answer (goal: 2 s)."
            + "".join(
                f" With the INSERT not prepared: {phase['ratio']:.2f} (median of "
                f"{len(phase.get('round_ratios', [1]))} rounds, same run)."
                for phase in unprepared
            )
        )
    return lines


MARKER = "webhook_throughput"


def write_readme(results, quick, elapsed):
    section = "\n".join(
        [
            SECTION,
            "",
            f"Notification endpoint under gunicorn (2 workers x 4 threads), real 2.8.2 envelopes "
            f"(pushes of one tag to 50 repositories), keep-alive senders; baseline: a no-op "
            f"endpoint in the same server and run. The portal's worker (`run_worker`) runs "
            f"beside it, as deployed, and applies the stored events in batches while the sender "
            f"posts; *lag* is how long after the last answer the last event was applied (none "
            f"pending), *until applied* counts that time in. "
            f"{datetime.now(UTC):%Y-%m-%d}, {machine()}{' (--quick)' if quick else ''}; "
            f"the senders run on the same 2 cores. Whole run {elapsed:.0f} s; load average "
            f"{os.getloadavg()[1]:.1f} (other work on the machine inflates p99 most).",
            "",
            table(results),
            "",
            checks(results),
            "",
            "events/s counts unique events stored per second (8 senders: 10 % of requests are "
            "redeliveries of an event another sender posts at about the same moment).",
            "",
            *notes(results),
            "",
            "### Where a request's time goes",
            "",
            "CPU milliseconds per request (user + system, from /proc) of each process during "
            "the one-sender phases: the web server (gunicorn), the worker applying the batches "
            "(run_worker), the database server (PostgreSQL; SQLite runs inside the other two) "
            "and the sender; *wall* is 1 / the rate. With one sender the request's steps run one "
            "after another, so every millisecond on the web server's and the database's side "
            "is a millisecond of the registry's queue; the worker's share runs beside them.",
            "",
            cpu_table(results),
            "",
            "### Pull bursts with and without the pull counters",
            "",
            "One sender posts a cluster's pulls (per node: HEAD of the tag, GET of the manifest "
            "by digest, 3 blob GETs; real 2.8.2 payloads, one user and address per node) to the "
            "webhook of a server without the pull counters' receiver and of one with it, "
            "started in turn; per-event time includes applying the batch, and per-event CPU "
            "counts every process over the same span (the ratio is taken on CPU: the wall "
            "time's end waits up to one applier round, noise at this size). Goal: ratio <= 1.2.",
            "",
            pull_table(results),
            "",
        ]
    )
    common.write_section(section, marker=MARKER)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], help=argparse.SUPPRESS)
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.backend:
        if args.backend == "sqlite":
            os.environ.pop("DATABASE_URL", None)
        elif not os.environ.get("DATABASE_URL"):
            sys.exit("--backend postgres needs DATABASE_URL (run through scripts/with-postgres.sh)")
        result = run_backend(args.quick)
        Path(args.json_out).write_text(json.dumps(result))
        return

    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("sqlite", "postgres"):
            out = Path(tmp) / f"{backend}.json"
            command = [PYTHON, __file__, "--backend", backend, "--json-out", str(out)]
            if args.quick:
                command.append("--quick")
            if backend == "postgres":
                command = [str(REPO_ROOT / "scripts" / "with-postgres.sh"), *command]
            env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
            subprocess.run(command, cwd=REPO_ROOT, env=env, check=True)
            results.append(json.loads(out.read_text()))
            print(table(results[-1:]))
            print(checks(results[-1:]))
            print(cpu_table(results[-1:]))
            print(pull_table(results[-1:]))
    elapsed = time.monotonic() - started
    write_readme(results, args.quick, elapsed)
    print(f"bench/README.md updated ({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
