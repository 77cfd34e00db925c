"""Deleting a whole repository against deleting its tags one by one, on the real registry.

    .venv/bin/python bench/repository_delete.py            # about a minute on 2 cores
    .venv/bin/python bench/repository_delete.py --write    # and replace its section in bench/README.md
    .venv/bin/python bench/repository_delete.py --quick    # fewer rounds, for a smoke run

One registry (Debian's docker-registry 2.8.2, the test harness's `start_registry`, filesystem
storage, write access as the worker has it), the test settings' SQLite database, the recycle
bin on (its default). Each round pushes two repositories of N single-layer images, one tag
each, then deletes one with `repository_delete.delete_repository` (plan, every image through
the bin, the layer links, the re-check, the directory) and the other's tags one by one with
`deletes.delete_tag` (what a person or a retention rule would do; the directory stays). The
ratio is the whole-repository delete's time over the tag-by-tag time, same run, median of the
rounds.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common
from common import machine

sys.path.insert(0, str(common.REPO_ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings_test")
SECTION = "repository_delete"


def run(rounds, images):
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment

    from registry_admin import deletes, repository_delete
    from registry_admin.tests.harness import registry_settings, start_registry
    from registry_admin.tests.images import build_image, make_layer

    setup_test_environment()
    connection.creation.create_test_db(verbosity=0)
    whole, one_by_one = [], []
    with tempfile.TemporaryDirectory(prefix="oyster-bench-repodelete-") as root:
        registry = start_registry(Path(root) / "registry", "http://127.0.0.1:9")
        registry_settings(settings, registry)
        settings.RECYCLE_BIN_DAYS = 7
        try:
            pusher = registry.pusher()
            for number in range(rounds):
                names = (f"bench/whole-{number}", f"bench/tags-{number}")
                for repository in names:
                    for tag in range(images):
                        layer = make_layer({"n": os.urandom(4096)})
                        pusher.push_image(repository, f"v{tag}", build_image(layers=[layer]))
                started = time.perf_counter()
                outcome = repository_delete.delete_repository("bench", names[0])
                whole.append(time.perf_counter() - started)
                if not outcome.deleted:
                    raise RuntimeError(f"not deleted: {outcome.message}")
                started = time.perf_counter()
                for tag in range(images):
                    deletes.delete_tag("bench", names[1], f"v{tag}")
                one_by_one.append(time.perf_counter() - started)
        finally:
            registry.stop()
            connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)
    return {"whole": statistics.median(whole), "tags": statistics.median(one_by_one)}


def markdown(r, load, seconds, rounds, images):
    return "\n".join(
        [
            "## Repository delete (`bench/repository_delete.py`)",
            "",
            f"Machine: {machine()}. Date: {common.today()}. Load average at the start: "
            f"{load:.1f}. Whole run {seconds:.0f} s. Debian's docker-registry 2.8.2, filesystem "
            f"storage, SQLite, recycle bin on; {images} single-layer images per repository, "
            f"median of {rounds} rounds.",
            "",
            "| | seconds | per image | ratio |",
            "|---|---|---|---|",
            f"| its {images} tags deleted one by one (`delete_tag`; the directory stays) | "
            f"{r['tags']:.2f} | {r['tags'] / images * 1000:.0f} ms | 1.00 |",
            f"| the whole repository (`delete_repository`: images, links, re-check, directory) | "
            f"{r['whole']:.2f} | {r['whole'] / images * 1000:.0f} ms | "
            f"{r['whole'] / r['tags']:.2f} |",
            "",
        ]
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke run)")
    parser.add_argument("--write", action="store_true", help="update bench/README.md")
    args = parser.parse_args()
    rounds, images = (1, 5) if args.quick else (3, 20)
    print(f"machine: {machine()}; date: {common.today()}", flush=True)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    results = run(rounds, images)
    text = markdown(results, load, time.perf_counter() - started, rounds, images)
    print(text)
    if args.write:
        common.write_section(text, marker=SECTION)


if __name__ == "__main__":
    main()
