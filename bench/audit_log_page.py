"""Audit log page at 1M events: keyset pages, filters, CSV export and the dashboard, on SQLite
and PostgreSQL.

    .venv/bin/python bench/audit_log_page.py           # 10k baseline and 1M events, both databases
    .venv/bin/python bench/audit_log_page.py --quick   # 10k and 200k
    .venv/bin/python bench/audit_log_page.py --backend sqlite   # one database only

PostgreSQL comes from scripts/with-postgres.sh (Debian's server, throwaway, fsync off).

A fresh SQLite database (WAL, the portal's settings) is filled with synthetic events shaped like
the registry's: a year of traffic over 500 repositories and 60 users, 70 % of them blob-level or
HEAD "noise", 5 % deletes, a few portal actions. Each request goes through the whole view and
template (Django's test client, logged in as a viewer) and is timed as the median of 5 runs.

The baseline is the same request on a 10k-event database in the same run: keyset pagination and
indexed filters should cost about the same at 1M (ratio near 1), where OFFSET paging grows with
the depth (shown for contrast: the same deep page fetched with OFFSET).
"""

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import common

REPO_ROOT = common.REPO_ROOT
PYTHON = str(REPO_ROOT / ".venv" / "bin" / "python")
SECTION = "## audit_log_page.py"
REPOSITORIES = [f"team-{i % 40}/app-{i}" for i in range(500)]
ACTORS = [f"user{i}" for i in range(60)]
NOW = datetime.now(UTC).replace(microsecond=0)


COLUMNS = (
    "source, event_id, timestamp, received_at, action, kind, is_head, noise, repository, "
    "from_repository, tag, digest, media_type, size, actor, request_id, request_addr, "
    "request_host, request_method, request_useragent, source_addr, source_instance, raw"
)


def fill(db_path, count, seed=7):
    """Insert `count` synthetic events straight into the table (indexes rebuilt afterwards)."""
    conn = sqlite3.connect(db_path)
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name='registry_admin_auditevent' AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    conn.executemany(
        f"INSERT INTO registry_admin_auditevent ({COLUMNS}) VALUES ({', '.join('?' * 23)})",
        synthetic_rows(count, seed),
    )
    conn.commit()
    for _, sql in indexes:
        conn.execute(sql)
    # Past the webhook, as if applied long ago: the trigger of migration 0012 queued each
    # registry row for the batched step, which would otherwise apply a million events next.
    conn.execute("DELETE FROM registry_admin_pendingevent")
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()


def fill_postgres(env, count, seed=7):
    """The same rows through COPY, with the table's own indexes and the text index dropped
    meanwhile and built again afterwards. The insert trigger of migration 0014 queues every
    row for the text index; the queue is then moved into it as the worker's batches do."""
    import psycopg

    url = env["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:
        indexes = conn.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename IN "
            "('registry_admin_auditevent', 'registry_admin_auditevent_search') AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        copy_sql = f"COPY registry_admin_auditevent ({COLUMNS}) FROM STDIN"
        with conn.cursor() as cursor, cursor.copy(copy_sql) as copy:
            for row in synthetic_rows(count, seed):
                # is_head and noise are 0/1 for SQLite, booleans here.
                copy.write_row([bool(v) if i in (6, 7) else v for i, v in enumerate(row)])
    index_text(env)
    with psycopg.connect(url, autocommit=True) as conn:
        for _, sql in indexes:
            conn.execute(sql)
        conn.execute("ANALYZE registry_admin_auditevent")
        conn.execute("ANALYZE registry_admin_auditevent_search")


def index_text(env):
    """Past the webhook: add the rows to the text index as the worker's batches do."""
    subprocess.run(
        [PYTHON, "manage.py", "shell", "-c",
         "from registry_admin.models.audit import index_new_events; index_new_events()"],
        cwd=REPO_ROOT, env=env, check=True,
    )  # fmt: skip


def synthetic_rows(count, seed):
    rng = random.Random(seed)
    span = 365 * 24 * 3600

    def rows():
        for i in range(count):
            when = NOW - timedelta(seconds=span * (count - i) / count)
            stamp = when.strftime("%Y-%m-%d %H:%M:%S.%f")
            repo = REPOSITORIES[int(rng.paretovariate(1.2)) % len(REPOSITORIES)]
            actor = ACTORS[int(rng.paretovariate(1.1)) % len(ACTORS)]
            roll = rng.random()
            digest = "sha256:" + uuid.UUID(int=rng.getrandbits(128)).hex * 2
            if roll < 0.5:  # blob-level
                action, kind, head, tag, method = "pull", "blob", roll < 0.3, "", "HEAD"
            elif roll < 0.7:  # manifest HEAD
                action, kind, head, tag, method = "pull", "manifest", True, "v1", "HEAD"
            elif roll < 0.85:
                action, kind, head, tag, method = "pull", "manifest", False, f"v{i % 30}", "GET"
            elif roll < 0.95:
                action, kind, head, tag, method = "push", "manifest", False, f"v{i % 30}", "PUT"
            elif roll < 0.9995:
                action, kind, head, tag, method = "delete", "tag", False, f"v{i % 30}", "DELETE"
            else:
                yield (
                    "portal", f"portal-{i}", stamp, stamp, "tag.deleted", "tag", 0, 0, repo, "",
                    "v1", "", "", None, "admin", "", "", "", "", "", "", "", '{"reason": "bench"}',
                )  # fmt: skip
                continue
            yield (
                "registry", f"ev-{i}", stamp, stamp, action, kind, int(head),
                int(head or kind == "blob"), repo, "", tag, digest,
                "application/vnd.oci.image.manifest.v1+json", 578, actor, f"req-{i}",
                f"10.0.{i % 200}.{i % 250}:{40000 + i % 20000}", "registry:5000", method,
                "docker/27.0", "registry-host:5000", "instance-1", '{"bench": true}',
            )  # fmt: skip

    return rows()


MEASURE = r"""
import json, statistics, sys, time
import django
django.setup()
from django.test.utils import setup_test_environment
setup_test_environment()  # the test client then captures each response's context
from django.contrib.auth.models import Group, User
from django.test import Client
from registry_admin.models import AuditEvent
from registry_admin.models.audit import encode_cursor
from registry_admin.registry import PingResult
from registry_admin.views.audit import ACTIVITY_CACHE_KEY, dashboard_context
from django.core.cache import cache

viewer = User.objects.filter(username="bench-viewer").first() or User.objects.create_user(
    "bench-viewer", password="x" * 20
)
viewer.groups.add(Group.objects.get(name="viewer"))
client = Client()
client.force_login(viewer)

deep_offset = int(sys.argv[1])
default = AuditEvent.objects.manifest_level().newest_first()
deep_row = default[deep_offset]
day = (deep_row.timestamp).date().isoformat()

def timed(fn, runs=5, p95=False):
    fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    if p95:
        return 1000 * sorted(times)[int(0.95 * len(times)) - 1]
    return 1000 * statistics.median(times)

def page(params):
    def go():
        response = client.get("/audit/", params)
        assert response.status_code == 200 and response.context["page"] is not None, params
    return go

def export(params):
    def go():
        response = client.get("/audit/export.csv", params)
        assert response.status_code == 200
        return sum(len(chunk) for chunk in response.streaming_content)
    return go

def uncached_dashboard():
    cache.delete(ACTIVITY_CACHE_KEY)
    dashboard_context(PingResult(state="unreachable"))

def offset_page():
    list(default.defer("raw")[deep_offset : deep_offset + 50])

results = {
    "first page": timed(page({})),
    "deep page (keyset cursor)": timed(page({"after": encode_cursor(deep_row)})),
    "deep page with OFFSET (query only, contrast)": timed(offset_page),
    "all=1 first page": timed(page({"all": "1"})),
    "repository prefix, common (team-1/)": timed(page({"repository": "team-1/"})),
    "repository prefix, rare (team-39/app-499)": timed(page({"repository": "team-39/app-499"})),
    "actor (user5)": timed(page({"actor": "user5"})),
    "action delete": timed(page({"action": "delete"})),
    "source portal": timed(page({"source": "portal"})),
    "one day": timed(page({"since": day, "until": day})),
    "free text (matches a user agent: docker/27)": timed(page({"q": "docker/27"})),
    "free text, rare (req-12345)": timed(page({"q": "req-12345"})),
    "free text, common: p95 of 20": timed(page({"q": "docker/27"}), runs=20, p95=True),
    "free text, rare: p95 of 20": timed(page({"q": "req-12345"}), runs=20, p95=True),
    "CSV export, one repository (app-7)": timed(export({"repository": "team-7/app-7"}), runs=3),
    "dashboard audit sections, uncached (30-day chart, most active)": timed(
        uncached_dashboard, runs=3
    ),
}
rows = AuditEvent.objects.filter(repository="team-7/app-7").manifest_level().count()
print("RESULTS " + json.dumps({"results": results, "export_rows": rows}))
"""


def build(count, env_base, server_url=None):
    """A migrated, filled database of `count` events (SQLite, or a database of its own on the
    PostgreSQL server at `server_url`); returns its environment and facts."""
    data_dir = tempfile.mkdtemp(prefix="oyster-bench-audit-")
    env = {
        **env_base,
        "DATA_DIR": data_dir,
        # The test settings only for static files from the finders (no collectstatic needed).
        "DJANGO_SETTINGS_MODULE": "portal.settings_test",
    }
    if server_url:
        import psycopg

        name = f"oyster_audit_{count}"
        with psycopg.connect(server_url + "/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        env["DATABASE_URL"] = f"{server_url}/{name}"
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO_ROOT, env=env, check=True
    )
    started = time.monotonic()
    if server_url:
        fill_postgres(env, count)
    else:
        fill(Path(data_dir) / "oyster.sqlite3", count)
    if not server_url:
        index_text(env)
    filled = time.monotonic() - started
    # The events went straight into the table, past the webhook: count the dashboard's
    # per-day table as the migration that adds it does for an existing log.
    started = time.monotonic()
    subprocess.run(
        [PYTHON, "manage.py", "rebuild_activity"],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    recount = time.monotonic() - started
    if server_url:
        import psycopg

        with psycopg.connect(env["DATABASE_URL"]) as conn:
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    else:
        size = (Path(data_dir) / "oyster.sqlite3").stat().st_size
    return {"env": env, "count": count, "deep": count // 5, "db_bytes": size,
            "fill_seconds": filled, "recount_seconds": recount}  # fmt: skip


def measure(database):
    out = subprocess.run(
        [PYTHON, "-c", MEASURE, str(database["deep"])],
        cwd=REPO_ROOT,
        env=database["env"],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    [line] = [line for line in out.stdout.splitlines() if line.startswith("RESULTS ")]
    return json.loads(line.removeprefix("RESULTS "))


def run_sizes(counts, env_base, rounds=2, server_url=None):
    """Both databases measured alternately, `rounds` times; each request keeps its best time,
    so a burst of load from elsewhere on the machine does not land on one size only."""
    databases = [build(count, env_base, server_url) for count in counts]
    for _ in range(rounds):
        for database in databases:
            data = measure(database)
            database["export_rows"] = data["export_rows"]
            best = database.setdefault("results", data["results"])
            for name, ms in data["results"].items():
                best[name] = min(best[name], ms)
    return databases


def machine():
    return common.machine(sqlite=True)


def report(results, quick, elapsed):
    """`results`: [(database label, base, big)]: one table with a column pair per database."""
    base0, big0 = results[0][1], results[0][2]
    head = "| request |"
    rule = "|---|"
    for label, base, big in results:
        head += f" {label}: {base['count']:,}, ms | {big['count']:,}, ms | ratio |"
        rule += "---|---|---|"
    lines = [
        SECTION,
        "",
        f"Audit log page, whole view + template; each figure is the better of two rounds (the "
        f"sizes alternate) of a median of 5 (CSV and dashboard: 3). "
        f"{datetime.now(UTC):%Y-%m-%d}, {machine()}{' (--quick)' if quick else ''}. Baseline: "
        f"the same requests on {base0['count']:,} events in the same run. Whole run "
        f"{elapsed:.0f} s; load average {os.getloadavg()[1]:.1f}. Goals at {big0['count']:,} "
        f"events: free text p95 < 150 ms, dashboard aggregates uncached < 100 ms.",
        "",
        head,
        rule,
    ]
    for name in base0["results"]:
        line = f"| {name} |"
        for _, base, big in results:
            small_ms, big_ms = base["results"][name], big["results"][name]
            ratio = f"{big_ms / small_ms:.2f}"
            if name.startswith("CSV"):
                # Its result grows with the table: compare rows per second instead.
                small_rate = base["export_rows"] / small_ms * 1000
                big_rate = big["export_rows"] / big_ms * 1000
                ratio = f"{small_rate:,.0f} vs {big_rate:,.0f} rows/s"
            line += f" {small_ms:.1f} | {big_ms:.1f} | {ratio} |"
        lines.append(line)
    lines.append("")
    for label, _base, big in results:
        rare = big["results"]["free text, rare: p95 of 20"]
        common_text = big["results"]["free text, common: p95 of 20"]
        dashboard = big["results"][DASHBOARD]
        lines.append(
            f"- {label}: database {big['db_bytes'] / 1e6:.0f} MB at {big['count']:,} events "
            f"(filled in {big['fill_seconds']:.0f} s; the per-day activity table recounted from "
            f"the log in {big['recount_seconds']:.1f} s, as its migration does). Free text p95 "
            f"{rare:.0f} ms rare, {common_text:.0f} ms common; dashboard aggregates "
            f"{dashboard:.0f} ms uncached."
        )
    lines += [
        "",
        "The dashboard sums the per-day activity table (counted as events arrive) and reads only "
        "the oldest, partial day of its rolling 30 days from the log; it is still cached for 5 "
        "minutes. Keyset pages and indexed filters cost about the same at "
        f"{big0['count']:,} events as at {base0['count']:,}, where OFFSET grows with the depth.",
        "",
        "Free text: both databases keep the searched text in a trigram-indexed table of its own, "
        "filled in batches after the webhook has answered (SQLite's FTS5 table; PostgreSQL's "
        "since migration 0014, which on PostgreSQL adds about a third to the database). A text "
        "is first counted in the index up to 2,000 matches: a rare one is then read from the "
        "index, a common one by walking the log in time order until a page is full.",
        "",
        f"Deep page: the row at depth N/5 of the default view ({base0['deep']:,} and "
        f"{big0['deep']:,}). The CSV export streamed {big0['export_rows']:,} rows at "
        f"{big0['count']:,} events ({base0['export_rows']:,} at {base0['count']:,}).",
        "",
    ]
    return "\n".join(lines)


DASHBOARD = "dashboard audit sections, uncached (30-day chart, most active)"


MARKER = "audit_log_page"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    env_base = common.page_bench_env()
    counts = [10_000, 200_000 if args.quick else 1_000_000]
    if args.json_out:  # one backend, in a child process (PostgreSQL: under with-postgres.sh)
        server = (
            os.environ["DATABASE_URL"].rpartition("/")[0] if args.backend == "postgres" else None
        )
        base, big = run_sizes(counts, env_base, server_url=server)
        for database in (base, big):
            database.pop("env")
        Path(args.json_out).write_text(json.dumps([base, big], default=str))
        return
    started = time.monotonic()
    results = []
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            out = Path(tmp) / f"{backend}.json"
            command = [PYTHON, __file__, "--backend", backend, "--json-out", str(out)]
            command += ["--quick"] if args.quick else []
            if backend == "postgres":
                command = [str(REPO_ROOT / "scripts" / "with-postgres.sh"), *command]
            env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
            subprocess.run(command, cwd=REPO_ROOT, env=env, check=True)
            base, big = json.loads(out.read_text())
            label = f"SQLite {sqlite3.sqlite_version}" if backend == "sqlite" else "PostgreSQL"
            results.append((label, base, big))
    section = report(results, args.quick, time.monotonic() - started)
    print(section)
    common.write_section(section, marker=MARKER)


if __name__ == "__main__":
    main()
