"""The reconcile's index side at 10,000 and 100,000 repositories x 10 tags: time per 1,000
repositories and the worker's peak memory.

    .venv/bin/python bench/reconcile_scale.py            # 10,000 and 100,000 (a few minutes)
    .venv/bin/python bench/reconcile_scale.py --quick    # 2,000 and 20,000

No registry holds 100,000 repositories here, so the registry client is a fake (in memory,
answers at once): what is measured is the portal's own work per repository, the part that could
grow with the registry (bench/reconcile.py measures a real registry at 1,000). Every repository
has 10 tags over 3 of 1,000 shared images whose details are already known, so no manifest is
read. Each size runs in a fresh process on a fresh SQLite index, as `run_worker` would: the
reconcile from an empty index, then again with nothing changed. Peak RSS is the process's
VmHWM, reset (clear_refs) before each pass; the baseline is the same process before any pass.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime

import common

REPO_ROOT = common.REPO_ROOT
PYTHON = common.PYTHON
SECTION = "## reconcile_scale.py"
MARKER = "reconcile_scale"

MEASURE = r"""
import json, sys, time
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.utils import timezone
from registry_admin import reconcile, registry
from registry_admin.models import Manifest, Repository, Tag

COUNT = int(sys.argv[1])
IMAGES = [f"sha256:{i:064x}" for i in range(1000)]
OCI = "application/vnd.oci.image.manifest.v1+json"
now = timezone.now()
Manifest.objects.bulk_create(
    [Manifest(digest=d, media_type=OCI, size=1000, details_fetched_at=now) for d in IMAGES]
)


class FakeClient:
    # The registry's answers, made up at once: names, tags, and a digest per HEAD.
    def list_repositories(self):
        return [f"team-{i % 50}/service-{i:06d}" for i in range(COUNT)]

    def list_tags(self, repository):
        return [f"v1.{t}" for t in range(10)]

    def head_manifest(self, repository, reference):
        n = int(repository.rsplit("-", 1)[1])
        digest = IMAGES[(n * 3 + int(reference.rsplit(".", 1)[1]) % 3) % len(IMAGES)]
        return registry.ManifestRef(digest=digest, media_type=OCI, size=578)


registry.get_client = lambda *args, **kwargs: FakeClient()


def rss():
    fields = dict(
        line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line
    )
    return int(fields["VmHWM"].split()[0]) * 1024, int(fields["VmRSS"].split()[0]) * 1024


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


results = {"baseline_rss": rss()[1]}
for name in ("empty index", "nothing changed"):
    reset_peak()
    started, cpu = time.perf_counter(), time.process_time()
    result = reconcile.reconcile()
    results[name] = {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss": rss()[0],
        "added": result.tags_added,
        "heads": result.heads,
        "errors": len(result.errors),
    }
results["tags"] = Tag.objects.count()
results["repositories"] = Repository.objects.count()
print("RESULTS " + json.dumps(results))
"""


def run_size(count, env_base):
    env = {
        **env_base,
        "DATA_DIR": tempfile.mkdtemp(prefix="oyster-bench-reconcile-scale-"),
        "DJANGO_SETTINGS_MODULE": "portal.settings_test",
    }
    out = subprocess.run(
        [PYTHON, "-c", MEASURE, str(count)], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    [line] = [line for line in out.stdout.splitlines() if line.startswith("RESULTS ")]
    return {"count": count, **json.loads(line.removeprefix("RESULTS "))}


def report(small, big, quick, elapsed):
    lines = [
        SECTION,
        "",
        f"{datetime.now(UTC):%Y-%m-%d}, {common.machine(sqlite=True)}"
        f"{' (--quick)' if quick else ''}; load average {common.load_average(5):.1f}. The "
        f"reconcile's index side with a fake registry client (in memory; no HTTP), "
        f"SYNC_CONCURRENCY as deployed (8), SQLite; 10 tags per repository. Baseline: "
        f"{small['count']:,} repositories in the same run. Goal: time per 1,000 repositories "
        f"flat (ratio near 1), memory bounded. Whole run {elapsed:.0f} s.",
        "",
        "| pass | repositories | tags | seconds (CPU) | s per 1,000 repositories | ratio | peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("empty index", "nothing changed"):
        base = small[name]["seconds"] / small["count"] * 1000
        for size in (small, big):
            r = size[name]
            per = r["seconds"] / size["count"] * 1000
            lines.append(
                f"| {name} | {size['count']:,} | {size['tags']:,} | {r['seconds']:.1f} "
                f"({r['cpu_seconds']:.1f}) | {per:.2f} | {per / base:.2f} | "
                f"{r['peak_rss'] / 2**20:.0f} MB |"
            )
    lines += [
        "",
        f"The process held {small['baseline_rss'] / 2**20:.0f} MB before the first pass "
        f"(Django and the portal loaded, migrated). Errors: "
        f"{sum(s[n]['errors'] for s in (small, big) for n in ('empty index', 'nothing changed'))}.",
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    env_base = {**common.page_bench_env(), "SYNC_CONCURRENCY": "8"}
    started = time.monotonic()
    small, big = (2_000, 20_000) if args.quick else (10_000, 100_000)
    results = [run_size(small, env_base), run_size(big, env_base)]
    section = report(*results, args.quick, time.monotonic() - started)
    print(section)
    common.write_section(section, marker=MARKER)


if __name__ == "__main__":
    os.environ.pop("DATABASE_URL", None)
    main()
