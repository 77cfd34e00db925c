"""Reconcile of a real registry: 1,000 repositories x 10 tags, sequential baseline vs concurrent.

    .venv/bin/python bench/reconcile.py               # 1,000 repositories x 10 tags (~4 min)
    .venv/bin/python bench/reconcile.py --repos 200   # smaller, for a smoke run

Debian's docker-registry (filesystem storage, htpasswd auth with the portal's service account at
bcrypt cost 4, notifications off) is started in a temporary folder. Each repository gets one
image of its own (its own config blob, the layer mounted from a seed repository so pushing stays
cheap) under 10 tags, pushed with plain HTTP on 8 threads.

The reconcile then runs three times on a fresh SQLite index in the same process, as the worker
would run it: with SYNC_CONCURRENCY=1 (the sequential baseline), with SYNC_CONCURRENCY=8 from an
empty index again, and once more at 8 with nothing changed (HEADs only, no manifest reads).
Goal: the concurrent cold reconcile under 60 s on 2 cores.
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import common
import requests

REPO_ROOT = common.REPO_ROOT
sys.path.insert(0, str(REPO_ROOT))
SECTION = "## reconcile.py"
TAGS = 10


def start_registry(root):
    from registry_admin.registry_config import local_registry_config
    from registry_admin.tests import harness

    reg = harness.start_registry(root, "http://127.0.0.1:9")
    config = local_registry_config(
        listen=f"127.0.0.1:{reg.port}",
        storage_root=reg.storage_root,
        htpasswd_path=reg.htpasswd_path,
        portal_url="http://127.0.0.1:9",
        token="unused",
    )
    # Nobody listens for notifications here; without an endpoint the registry queues nothing.
    del config["notifications"]
    reg.restart(config)
    return reg


def push(reg, repositories, threads=8):
    """Each repository: its own config blob (so the reconcile reads 1,000 configs), the seed's
    layer mounted, and one manifest under TAGS tags."""
    from registry_admin.tests.harness import PUSH_PASSWORD, PUSH_USER
    from registry_admin.tests.images import OCI_MANIFEST, build_image, sha256_digest

    seed_image = build_image()
    pusher = reg.pusher()
    pusher.push_image("bench/seed", "v1", seed_image)
    manifest = json.loads(seed_image.manifest)
    seed_config = json.loads(seed_image.config)
    local = threading.local()

    def session():
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.session.auth = (PUSH_USER, PUSH_PASSWORD)
        return local.session

    def push_one(number):
        name = f"team-{number % 20}/service-{number:05d}"
        s = session()
        for layer in manifest["layers"]:
            mount = s.post(
                f"{reg.url}/v2/{name}/blobs/uploads/",
                params={"mount": layer["digest"], "from": "bench/seed"},
                timeout=30,
            )
            assert mount.status_code == 201, mount.text
        config = dict(seed_config, config={**seed_config["config"], "Labels": {"repo": name}})
        config_bytes = json.dumps(config).encode()
        start = s.post(f"{reg.url}/v2/{name}/blobs/uploads/", timeout=30)
        assert start.status_code == 202, start.text
        location = start.headers["Location"]
        location = location if location.startswith("http") else reg.url + location
        put = s.put(
            location,
            params={"digest": sha256_digest(config_bytes)},
            data=config_bytes,
            headers={"Content-Type": "application/octet-stream"},
            timeout=30,
        )
        assert put.status_code == 201, put.text
        body = json.dumps(
            {
                **manifest,
                "config": {
                    **manifest["config"],
                    "digest": sha256_digest(config_bytes),
                    "size": len(config_bytes),
                },
            }
        ).encode()
        for tag in range(TAGS):
            put = s.put(
                f"{reg.url}/v2/{name}/manifests/1.{tag}.0",
                data=body,
                headers={"Content-Type": OCI_MANIFEST},
                timeout=30,
            )
            assert put.status_code == 201, put.text

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(push_one, range(repositories)))


def setup_django(data_dir, reg):
    from registry_admin.tests.harness import SERVICE_PASSWORD, SERVICE_USER

    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings_test",
            "DATA_DIR": data_dir,
            "REGISTRY_URL": reg.url,
            "REGISTRY_USERNAME": SERVICE_USER,
            "REGISTRY_PASSWORD": SERVICE_PASSWORD,
            "REGISTRY_TIMEOUT": "30",
            "LOG_LEVEL": "ERROR",
        }
    )
    os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def timed_reconcile(concurrency, fresh):
    from registry_admin import reconcile
    from registry_admin.models import Manifest, Repository

    if fresh:
        Repository.objects.all().delete()
        Manifest.objects.all().delete()
    started = time.perf_counter()
    result = reconcile.reconcile(concurrency=concurrency)
    seconds = time.perf_counter() - started
    assert not result.errors, result.errors[:3]
    return seconds, result


def head_floor(concurrency):
    """HEAD every tag on `concurrency` threads with nothing else: the registry's throughput on
    this machine right now, the floor for any reconcile."""
    from registry_admin import registry
    from registry_admin.models import Tag

    refs = list(Tag.objects.values_list("repository__name", "name"))
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda ref: registry.get_client().head_manifest(*ref), refs))
    return time.perf_counter() - started, len(refs), concurrency


def machine():
    return f"{common.machine()}, load average {common.load_average():.1f} at the start"


def report(repositories, push_seconds, runs, floor, elapsed, started_machine):
    sequential = runs[0][1]
    lines = [
        SECTION,
        "",
        f"Reconcile of Debian's docker-registry 2.8 (filesystem, htpasswd at bcrypt cost 4) "
        f"holding {repositories:,} repositories x {TAGS} tags (+1 seed), one image per "
        f"repository (own config, shared layer). {datetime.now(UTC):%Y-%m-%d}, {started_machine}. Pushing took "
        f"{push_seconds:.0f} s (8 threads). Baseline: the sequential reconcile "
        f"(SYNC_CONCURRENCY=1) in the same run. Goal: < 60 s on 2 cores. Whole run {elapsed:.0f} s.",
        "",
        "| reconcile | seconds | ratio to sequential | tags HEADed | manifests read "
        "| configs read | requests/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, seconds, result in runs:
        # catalog pages + tags/list per repository + HEAD per tag + new manifests + configs
        requests_made = (
            result.repositories // 1000
            + 1
            + result.repositories
            + result.heads
            + result.details_fetched
            + result.configs_read
        )
        lines.append(
            f"| {label} | {seconds:.1f} | {seconds / sequential:.2f} | {result.heads:,} "
            f"| {result.details_fetched:,} | {result.configs_read:,} "
            f"| {requests_made / seconds:.0f} |"
        )
    floor_seconds, floor_heads, floor_threads = floor
    lines += [
        f"| floor: the same {floor_heads:,} HEADs alone on {floor_threads} threads, no index "
        f"| {floor_seconds:.1f} | {floor_seconds / sequential:.2f} "
        f"| {floor_heads:,} | 0 | 0 | {floor_heads / floor_seconds:.0f} |",
        "",
        "The floor is what the registry and this machine allow at that moment; the reconcile's "
        "distance to it is the portal's own cost.",
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    started_machine = machine()
    started = time.monotonic()
    root = tempfile.mkdtemp(prefix="oyster-bench-reconcile-")
    reg = start_registry(Path(root) / "registry")
    try:
        push_started = time.monotonic()
        push(reg, args.repos)
        push_seconds = time.monotonic() - push_started
        print(f"pushed {args.repos} repositories x {TAGS} tags in {push_seconds:.0f} s", flush=True)
        setup_django(str(Path(root) / "data"), reg)
        runs = []
        for label, concurrency, fresh in (
            ("sequential, empty index (baseline)", 1, True),
            (f"concurrent ({args.concurrency}), empty index", args.concurrency, True),
            (f"concurrent ({args.concurrency}), nothing changed", args.concurrency, False),
        ):
            seconds, result = timed_reconcile(concurrency, fresh)
            print(f"{label}: {seconds:.1f} s", flush=True)
            runs.append((label, seconds, result))
        floor = head_floor(args.concurrency)
        print(f"HEADs alone: {floor[0]:.1f} s", flush=True)
    finally:
        reg.stop()
    section = report(
        args.repos, push_seconds, runs, floor, time.monotonic() - started, started_machine
    )
    print(section)
    if not args.no_write:
        common.write_section(section, heading=SECTION)


if __name__ == "__main__":
    main()
