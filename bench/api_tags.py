"""The API's tag list against the repository page it mirrors, for the same repository.

    .venv/bin/python bench/api_tags.py            # 1,000 tags on 250 images
    .venv/bin/python bench/api_tags.py --quick    # 200 tags on 50 images

A fresh SQLite database (the test settings: production ones, static files from the finders), one repository seeded through the ORM, an
admin with a read token. Each round asks for the first 50 tags, newest first, both ways, in
alternating order, through the whole Django stack (test client, in-process): the HTML page
with a session, `GET /api/v1/repositories/{repository}/-/tags/` with the token. The registry is
a closed port (the page's status line pings it; the answer is cached for 30 s).
"""

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import common

sys.path.insert(0, str(common.REPO_ROOT))


def setup(directory):
    os.environ.update(common.page_bench_env())
    os.environ.update(
        {
            # Production settings but static files from the finders (no collectstatic).
            "DJANGO_SETTINGS_MODULE": "portal.settings_test",
            "DATA_DIR": str(directory),
            "DATABASE_URL": f"sqlite:///{directory}/portal.sqlite3",
            "REGISTRY_URL": f"http://127.0.0.1:{common.free_port()}",
            "REGISTRY_PASSWORD": "unused",
            "API_THROTTLE_RATE": "1000000/m",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)


def seed(tags, images):
    from registry_admin import api_tokens, index
    from registry_admin.models import Manifest, Repository, Tag
    from registry_admin.tests.factories import make_admin

    repository = Repository.objects.create(name="team/app")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    manifests = Manifest.objects.bulk_create(
        Manifest(
            digest="sha256:" + hashlib.sha256(str(i).encode()).hexdigest(),
            media_type="application/vnd.oci.image.manifest.v1+json",
            size=10_000_000 + i,
            created=start + timedelta(hours=i),
            platforms=[{"os": "linux", "architecture": "amd64"}],
        )
        for i in range(images)
    )
    Tag.objects.bulk_create(
        Tag(
            repository=repository,
            name=f"1.{i // 10}.{i % 10}",
            digest=manifests[i % images].digest,
            manifest=manifests[i % images],
            pushed_at=start + timedelta(minutes=i),
        )
        for i in range(tags)
    )
    index.refresh_repository_stats(repository)
    admin = make_admin("bench")
    _, token = api_tokens.create("bench", admin, "bench", "read")
    return admin, token


def measure(rounds, admin, token):
    from django.test import Client

    page, api = Client(), Client()
    page.force_login(admin)
    page_url = "/repositories/team/app/"
    api_url = "/api/v1/repositories/team/app/-/tags/?per_page=50"
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    for client, url, extra in ((page, page_url, {}), (api, api_url, headers)):
        response = client.get(url, **extra)  # warm-up (and the cached registry ping)
        assert response.status_code == 200, (url, response.status_code)
    times = {"page": [], "api": []}
    for number in range(rounds):
        order = [("page", page, page_url, {}), ("api", api, api_url, headers)]
        for name, client, url, extra in order if number % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            response = client.get(url, **extra)
            times[name].append(time.perf_counter() - started)
            assert response.status_code == 200
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    tags, images, rounds = (200, 50, 30) if args.quick else (1000, 250, 60)
    load = common.load_average()
    with tempfile.TemporaryDirectory(prefix="oyster-bench-api-") as directory:
        setup(Path(directory))
        admin, token = seed(tags, images)
        times = measure(rounds, admin, token)
    page_ms = statistics.median(times["page"]) * 1000
    api_ms = statistics.median(times["api"]) * 1000
    rows = [
        ("repository page, HTML (baseline)", times["page"], page_ms),
        ("`GET /api/v1/repositories/{repository}/-/tags/`, JSON", times["api"], api_ms),
    ]
    table = "\n".join(
        f"| {label} | {median:.1f} | {common.percentile(values, 0.9) * 1000:.1f} | "
        f"{median / page_ms:.2f} |"
        for label, values, median in rows
    )
    common.write_section(
        f"""## API tag list vs the repository page (`bench/api_tags.py`)

Machine: {common.machine(sqlite=True)}. Date: {common.today()}. Load average at the start: {load:.1f}. One repository of {tags:,} tags on {images:,} images (SQLite, the test settings: production ones with static files from the finders; in-process test client); the first 50 tags, newest first, {rounds} rounds each in alternating order.

| request | median ms | p90 ms | ratio to the page |
|---|---|---|---|
{table}

Both read the same `browse.tag_page` (every tag's sort key, then one page of rows); the page
adds its template, the header's status line and the repository's storage summary, the API its
token check (one indexed read; `last_used_at` written at most once a minute) and the JSON.
""",
        marker="api_tags",
    )
    print(f"page {page_ms:.1f} ms, api {api_ms:.1f} ms, ratio {api_ms / page_ms:.2f}")


if __name__ == "__main__":
    main()
