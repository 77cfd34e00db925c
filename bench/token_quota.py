"""What quotas cost the token endpoint: tokens per second with 100 quotas against none.

    .venv/bin/python bench/token_quota.py            # about a minute on 2 cores
    .venv/bin/python bench/token_quota.py --write    # and replace its section in bench/README.md
    .venv/bin/python bench/token_quota.py --quick    # fewer requests, for a smoke run

In process (Django test client, the test settings' SQLite database, rules as in production), a
registry user hashed at bcrypt cost 4 (so the password check does not hide what the quota check
costs) asks for `pull,push` on `team-57/app`, as `docker push` does. Configurations, measured in
alternating rounds in one run: no quota; 100 quotas (`team-0/*` .. `team-98/*` and `**`) none
exceeded; the same with `team-57/*` exceeded (push withheld, the refusal's audit row once per
window); and that again with the per-process cache off (the quotas read on every request).
Goal (issue #31): a request under an exceeded quota costs no more than one without quotas,
ratio >= 0.9.
"""

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import time

import common
from common import machine

sys.path.insert(0, str(common.REPO_ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings_test")
SECTION = "token_quota"
USER, PASSWORD = "pusher", "bench-password-cost-4"


def run(rounds, count):
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from registry_admin import access, htpasswd, quotas
    from registry_admin.models import Quota

    setup_test_environment()
    connection.creation.create_test_db(verbosity=0)
    results = {name: [] for name in ("none", "quotas", "exceeded", "uncached")}
    with tempfile.TemporaryDirectory(prefix="oyster-bench-quota-") as root:
        settings.TOKEN_KEY_DIR = f"{root}/keys"
        settings.HTPASSWD_PATH = f"{root}/htpasswd"
        settings.REGISTRY_AUTH_MODE = "token"
        try:
            htpasswd.add_user(USER, PASSWORD, rounds=4)
            access.grant("bench", USER, "team-*/*", "pull,push")
            client = Client()
            params = {
                "service": settings.TOKEN_SERVICE,
                "scope": "repository:team-57/app:pull,push",
            }
            auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

            def rate(expect_push):
                started = time.perf_counter()
                for _ in range(count):
                    answer = client.get("/auth/token", params, HTTP_AUTHORIZATION=auth)
                    if answer.status_code != 200:
                        raise RuntimeError(f"token endpoint answered {answer.status_code}")
                elapsed = time.perf_counter() - started
                if _pushes(answer) != expect_push:
                    raise RuntimeError("push granted or withheld against the configuration")
                return count / elapsed

            def _pushes(answer):
                payload = answer.json()["token"].split(".")[1]
                claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
                return any("push" in a["actions"] for a in claims["access"])

            def configure(name):
                Quota.objects.all().delete()
                quotas.CACHE_SECONDS = 0 if name == "uncached" else 2.0
                quotas.forget_cached()
                if name != "none":
                    Quota.objects.bulk_create(
                        [Quota(pattern=f"team-{i}/*", limit_bytes=10**9) for i in range(99)]
                        + [Quota(pattern="**", limit_bytes=10**12)]
                    )
                if name in ("exceeded", "uncached"):
                    Quota.objects.filter(pattern="team-57/*").update(level=Quota.Level.EXCEEDED)
                return name == "none" or name == "quotas"

            for name in results:  # warm-up
                rate(configure(name))
            for _ in range(rounds):
                for name in results:
                    expect_push = configure(name)
                    results[name].append(rate(expect_push))
        finally:
            connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)
    return {name: statistics.median(values) for name, values in results.items()}


def markdown(r, load, seconds, count, rounds):
    base = r["none"]
    rows = [
        ("no quota", "none"),
        ("100 quotas, none exceeded", "quotas"),
        ("100 quotas, this repository's exceeded (push withheld)", "exceeded"),
        ("the same, quotas read on every request (cache off)", "uncached"),
    ]
    lines = [
        "## Quotas at the token endpoint (`bench/token_quota.py`)",
        "",
        f"Machine: {machine()}. Date: {common.today()}. Load average at the start: {load:.1f}. "
        f"Whole run {seconds:.0f} s. In process, a user at bcrypt cost 4 asking for "
        f"`pull,push` on `team-57/app`; {count} requests per round, median of {rounds} "
        "alternating rounds. Goal: ratio to no quota >= 0.9.",
        "",
        "| configuration | tokens/s | ratio to no quota |",
        "|---|---|---|",
        *(f"| {label} | {r[key]:.0f} | {r[key] / base:.2f} |" for label, key in rows),
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (smoke run)")
    parser.add_argument("--write", action="store_true", help="update bench/README.md")
    args = parser.parse_args()
    rounds, count = (1, 30) if args.quick else (5, 200)
    print(f"machine: {machine()}; date: {common.today()}", flush=True)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    results = run(rounds, count)
    text = markdown(results, load, time.perf_counter() - started, count, rounds)
    print(text)
    if args.write:
        common.write_section(text, marker=SECTION)


if __name__ == "__main__":
    main()
