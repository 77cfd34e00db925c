"""Repositories pages on a large index: p50/p95 server time at 10k and 100k repositories, on
SQLite.

    .venv/bin/python bench/browse.py           # 10,000 and 100,000 repositories x 10 tags
    .venv/bin/python bench/browse.py --quick   # 1,000 and 10,000

A fresh SQLite database (WAL, the portal's settings) is filled with an index shaped like a real
one: every repository has 10 tags over 3 images (shared digests), sizes, created dates and push
times; 5 % of the repositories are empty; one extra repository has 1,000 tags. Each request goes
through the whole view and template (Django's test client, logged in as a viewer; the registry
is down and its cached ping shows the banner, as it would in production). Every request is timed
`--runs` times; p50 and p95 of wall and CPU time are reported.

The baseline is the same request on the 10x smaller index in the same run: the goal is p95 under
100 ms at 100,000 repositories and a ratio near 1 (flat when the registry grows 10x).
"""

import argparse
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import common

REPO_ROOT = common.REPO_ROOT
PYTHON = str(REPO_ROOT / ".venv" / "bin" / "python")
SECTION = "## browse.py"
NOW = datetime.now(UTC).replace(microsecond=0)
BIG_REPOSITORY = "bench/many-tags"
OCI = "application/vnd.oci.image.manifest.v1+json"
MANIFEST_COLUMNS = (
    "id", "digest", "media_type", "manifest_size", "size", "created", "config_digest", "is_index",
    "platforms", "layer_count", "layers", "labels", "config", "details_error",
    "details_fetched_at", "first_seen_at",
)  # fmt: skip
REPOSITORY_COLUMNS = (
    "id", "name", "is_empty", "tag_count", "total_size", "last_push_at", "synced_at",
    "first_seen_at",
)  # fmt: skip
TAG_COLUMNS = ("id", "repository_id", "name", "digest", "manifest_id", "pushed_at", "updated_at")


def _stamp(when):
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")


def fill(db_path, repositories, seed=5):
    """Insert the index straight into the tables (indexes rebuilt afterwards)."""
    rng = random.Random(seed)
    conn = sqlite3.connect(db_path)
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL AND "
        "tbl_name IN ('registry_admin_repository', 'registry_admin_tag', 'registry_admin_manifest')"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    stamp_now = _stamp(NOW)
    manifests, repos, tags = [], [], []
    manifest_id = 0
    tag_id = 0

    def add_manifest(created, size):
        nonlocal manifest_id
        manifest_id += 1
        digest = f"sha256:{manifest_id:064x}"
        platforms = json.dumps([{"os": "linux", "architecture": "amd64"}])
        manifests.append(
            (manifest_id, digest, OCI, 1200, size, _stamp(created), "", 0, platforms, 3,
             "[]", "{}", "{}", "", stamp_now, stamp_now)
        )  # fmt: skip
        return manifest_id, digest

    names = [f"team-{i % 50}/service-{i:05d}" for i in range(repositories)] + [BIG_REPOSITORY]
    for number, name in enumerate(names, 1):
        big = name == BIG_REPOSITORY
        empty = not big and rng.random() < 0.05
        tag_count = 0 if empty else (1000 if big else 10)
        images = [
            add_manifest(
                NOW - timedelta(days=rng.uniform(0, 700)), rng.randint(5_000_000, 900_000_000)
            )
            for _ in range(0 if empty else (300 if big else 3))
        ]
        last_push = None
        for t in range(tag_count):
            tag_id += 1
            pushed = NOW - timedelta(minutes=rng.uniform(0, 500_000))
            last_push = max(last_push or pushed, pushed)
            mid, digest = images[t % len(images)]
            tags.append(
                (tag_id, number, f"1.{t // 10}.{t % 10}", digest, mid, _stamp(pushed), stamp_now)
            )
        total = sum(m[4] for m in manifests[len(manifests) - len(images) :]) if images else 0
        repos.append(
            (number, name, int(empty), tag_count, total,
             _stamp(last_push) if last_push else None, stamp_now, stamp_now)
        )  # fmt: skip
    for table, columns, rows in (
        ("manifest", MANIFEST_COLUMNS, manifests),
        ("repository", REPOSITORY_COLUMNS, repos),
        ("tag", TAG_COLUMNS, tags),
    ):
        conn.executemany(
            f"INSERT INTO registry_admin_{table} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})",
            rows,
        )
    conn.commit()
    for _, sql in indexes:
        conn.execute(sql)
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()
    return len(tags)


MEASURE = r"""
import json, statistics, sys, time
import django
django.setup()
from django.contrib.auth.models import Group, User
from django.test import Client

runs = int(sys.argv[1])
viewer = User.objects.create_user("bench-viewer", password="x" * 20)
viewer.groups.add(Group.objects.get(name="viewer"))
client = Client()
client.force_login(viewer)

def pct(values, q):
    values = sorted(values)
    return values[max(0, round(q * len(values)) - 1)]

def timed(path):
    response = client.get(path)  # warm-up (and the cached ping)
    assert response.status_code == 200, (path, response.status_code)
    wall, cpu = [], []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.thread_time()
        response = client.get(path)
        wall.append(1000 * (time.perf_counter() - started))
        cpu.append(1000 * (time.thread_time() - started_cpu))
        assert response.status_code == 200
    return {
        "p50": statistics.median(wall), "p95": pct(wall, 0.95),
        "cpu50": statistics.median(cpu), "cpu95": pct(cpu, 0.95),
    }

big = "/repositories/bench/many-tags/"
requests = {
    "list, by name (default)": "/repositories/",
    "list, by last push": "/repositories/?sort=push",
    "list, by size": "/repositories/?sort=size",
    "list, by tag count": "/repositories/?sort=tags",
    "list, empty shown": "/repositories/?empty=on",
    "list, last page": "/repositories/?page=last",
    "search, common (service-0)": "/repositories/?q=service-0",
    "search, rare (service-00042)": "/repositories/?q=service-00042",
    "search, by size": "/repositories/?q=team-1/&sort=size",
    "1,000-tag repository, by created (default)": big,
    "1,000-tag repository, by name (semver)": big + "?sort=name",
    "1,000-tag repository, by size": big + "?sort=size",
    "1,000-tag repository, filtered (1.9)": big + "?q=1.9",
}
print("RESULTS " + json.dumps({name: timed(path) for name, path in requests.items()}))
"""


def run_size(repositories, runs, env_base):
    data_dir = tempfile.mkdtemp(prefix="oyster-bench-browse-")
    env = {
        **env_base,
        "DATA_DIR": data_dir,
        "DJANGO_SETTINGS_MODULE": "portal.settings_test",
        "REGISTRY_URL": "http://127.0.0.1:9",  # nothing listens: the banner shows, ping cached
        "REGISTRY_TIMEOUT": "0.5",
    }
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO_ROOT, env=env, check=True
    )
    started = time.monotonic()
    tags = fill(Path(data_dir) / "oyster.sqlite3", repositories)
    fill_seconds = time.monotonic() - started
    out = subprocess.run(
        [PYTHON, "-c", MEASURE, str(runs)], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    [line] = [line for line in out.stdout.splitlines() if line.startswith("RESULTS ")]
    return {
        "repositories": repositories,
        "tags": tags,
        "fill_seconds": fill_seconds,
        "results": json.loads(line.removeprefix("RESULTS ")),
    }


def machine():
    return f"{common.machine(sqlite=True)}, load average {common.load_average():.1f} at the start"


def report(base, big, runs, quick, elapsed):
    lines = [
        SECTION,
        "",
        f"Repositories pages, whole view + template, {runs} timed requests each (after one "
        f"warm-up). {datetime.now(UTC):%Y-%m-%d}, {machine()}{' (--quick)' if quick else ''}. "
        f"Index: {big['repositories']:,} repositories / {big['tags']:,} tags, baseline "
        f"{base['repositories']:,} / {base['tags']:,} in the same run (each plus one "
        f"1,000-tag repository). Goal: p95 < 100 ms, flat (ratio near 1) at 10x. Whole run "
        f"{elapsed:.0f} s.",
        "",
        f"| request | p50 @ {base['repositories']:,} | p95 @ {base['repositories']:,} "
        f"| p50 @ {big['repositories']:,} | p95 @ {big['repositories']:,} | p95 ratio "
        f"| CPU p50 / p95 @ {big['repositories']:,} | CPU p95 ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, small in base["results"].items():
        large = big["results"][name]
        lines.append(
            f"| {name} | {small['p50']:.1f} | {small['p95']:.1f} | {large['p50']:.1f} "
            f"| {large['p95']:.1f} | {large['p95'] / small['p95']:.2f} "
            f"| {large['cpu50']:.1f} / {large['cpu95']:.1f} | {large['cpu95'] / small['cpu95']:.2f} |"
        )
    lines += [
        "",
        "Milliseconds. Wall time is what a user waits on this shared machine; CPU time (the "
        "request thread's `thread_time`) is the same work without the other processes' load.",
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 repositories")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    env_base = common.page_bench_env()
    started = time.monotonic()
    small, large = (1_000, 10_000) if args.quick else (10_000, 100_000)
    base = run_size(small, args.runs, env_base)
    big = run_size(large, args.runs, env_base)
    section = report(base, big, args.runs, args.quick, time.monotonic() - started)
    print(section)
    if not args.no_write:
        common.write_section(section, heading=SECTION)


if __name__ == "__main__":
    main()
