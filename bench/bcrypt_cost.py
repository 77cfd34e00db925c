"""bcrypt cost benchmark: what each htpasswd cost adds to every registry request.

    .venv/bin/python bench/bcrypt_cost.py            # about a minute on 2 cores
    .venv/bin/python bench/bcrypt_cost.py --write    # and replace its section in bench/README.md
    .venv/bin/python bench/bcrypt_cost.py --quick    # fewer requests, for a smoke run

Starts Debian's registry (the test harness's `start_registry`) with one user per cost (4, 8, 10,
12), then times sequential `GET /v2/` with each user's credentials over one keep-alive
connection. The baseline, measured in the same run and interleaved with the others, is the same
request without credentials: the registry answers 401 without verifying any hash, so the ratio
is what the bcrypt verification costs on top of the registry's own work. Rounds alternate the
order and the median round is reported.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common
import requests
from common import machine

REPO_ROOT = common.REPO_ROOT
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings_test")

COSTS = (4, 8, 10, 12)
# Requests per cost and round: each cost gets a few seconds per round.
REQUESTS = {None: 200, 4: 200, 8: 80, 10: 30, 12: 10}
SECTION = "bcrypt_cost"


def seconds_per_request(session, url, auth, count, expected):
    started = time.perf_counter()
    for _ in range(count):
        response = session.get(url, auth=auth, timeout=30)
        if response.status_code != expected:
            raise RuntimeError(
                f"expected {expected}, got {response.status_code} ({auth and auth[0]})"
            )
    return (time.perf_counter() - started) / count


def run(rounds, scale):
    from registry_admin import htpasswd
    from registry_admin.tests.harness import start_registry

    with tempfile.TemporaryDirectory(prefix="oyster-bench-bcrypt-") as root:
        registry = start_registry(Path(root), "http://127.0.0.1:9")
        try:
            users = {cost: (f"cost{cost}", f"bench-password-cost-{cost}") for cost in COSTS}
            with open(registry.htpasswd_path, "a") as f:
                for cost, (name, password) in users.items():
                    f.write(f"{name}:{htpasswd.hash_password(password, cost)}\n")
            url = f"{registry.url}/v2/"
            session = requests.Session()
            keys = [None, *COSTS]
            for key in keys:  # warm-up: connection, file load, first bcrypt
                seconds_per_request(session, url, users.get(key), 3, 401 if key is None else 200)
            samples = {key: [] for key in keys}
            for number in range(rounds):
                order = keys if number % 2 == 0 else list(reversed(keys))
                for key in order:
                    count = max(3, int(REQUESTS[key] * scale))
                    expected = 401 if key is None else 200
                    samples[key].append(
                        seconds_per_request(session, url, users.get(key), count, expected)
                    )
        finally:
            registry.stop()
    return {key: statistics.median(values) for key, values in samples.items()}


def markdown(results, load):
    baseline = results[None]
    lines = [
        f"<!-- {SECTION} -->",
        "## bcrypt cost per registry request (`bench/bcrypt_cost.py`)",
        "",
        f"Machine: {machine()}. Date: {common.today()}. Load average at the start: "
        f"{load:.1f}. Debian's docker-registry, sequential `GET /v2/` over one keep-alive "
        "connection, median of the rounds.",
        "",
        "| htpasswd cost | ms per request | requests/s (one client) | ratio to the 401 baseline |",
        "|---|---|---|---|",
        f"| none (401 baseline) | {baseline * 1000:.1f} | {1 / baseline:.0f} | 1.0 |",
    ]
    for cost in COSTS:
        seconds = results[cost]
        lines.append(
            f"| {cost} | {seconds * 1000:.1f} | {1 / seconds:.0f} | {seconds / baseline:.1f} |"
        )
    lines += [f"<!-- /{SECTION} -->", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (smoke run)")
    parser.add_argument("--write", action="store_true", help="update bench/README.md")
    args = parser.parse_args()
    rounds, scale = (1, 0.2) if args.quick else (5, 1.0)
    print(f"machine: {machine()}; date: {common.today()}", flush=True)
    load = os.getloadavg()[0]
    text = markdown(run(rounds, scale), load)
    print(text)
    if args.write:
        common.write_section(text, marker=SECTION)


if __name__ == "__main__":
    main()
