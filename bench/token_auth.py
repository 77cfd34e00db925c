"""Token auth vs htpasswd: authenticated registry requests per second, and tokens issued per second.

    .venv/bin/python bench/token_auth.py            # about a minute on 2 cores
    .venv/bin/python bench/token_auth.py --write    # and replace its section in bench/README.md
    .venv/bin/python bench/token_auth.py --quick    # fewer requests, for a smoke run

One run, one registry process (Debian's docker-registry, the test harness's `start_registry`),
one pushed image. Phase 1: htpasswd auth, a user hashed at bcrypt cost 10, `HEAD` of the
manifest (what a client sends first on every pull), sequential over one keep-alive connection
and from 8 threads; the unauthenticated 401 on the same URL is the registry's own ceiling.
Phase 2: the same registry restarted with `auth: token` and the bundle the portal writes; the
same requests with a bearer token the portal signed (a client reuses its token for the token's
lifetime, so each request costs a signature check, not a bcrypt). Phase 3: the portal's token
endpoint itself, in process (Django test client, database and rules as in production): tokens per
second for a person's account (cost 10, one bcrypt per token) and for the service account
(cost 4), and the bare signing rate without any password check.
"""

import argparse
import base64
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import common
import requests
import yaml
from common import machine

REPO_ROOT = common.REPO_ROOT
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings_test")
SECTION = "token_auth"
THREADS = 8


def rate(session_factory, url, headers, count, expected, threads=1):
    """Requests per second for `count` HEADs split over `threads` sessions."""
    errors = []

    def worker(n):
        session = session_factory()
        for _ in range(n):
            status = session.head(url, headers=headers, timeout=60).status_code
            if status != expected:
                errors.append(status)

    per = max(1, count // threads)
    pool = [threading.Thread(target=worker, args=(per,)) for _ in range(threads)]
    started = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"expected {expected}, got {sorted(set(errors))}")
    return per * threads / elapsed


def median_rate(rounds, *args, **kwargs):
    return statistics.median(rate(*args, **kwargs) for _ in range(rounds))


def run(rounds, scale):
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from registry_admin import access, htpasswd, tokens
    from registry_admin.registry_config import token_auth_section
    from registry_admin.tests.harness import SERVICE_PASSWORD, SERVICE_USER, start_registry
    from registry_admin.tests.images import build_image

    setup_test_environment()
    connection.creation.create_test_db(verbosity=0)
    results = {}
    with tempfile.TemporaryDirectory(prefix="oyster-bench-token-") as root:
        root = Path(root)
        settings.TOKEN_KEY_DIR = str(root / "keys")
        settings.REGISTRY_AUTH_MODE = "token"
        registry = start_registry(root / "registry", "http://127.0.0.1:9")
        settings.HTPASSWD_PATH = str(registry.htpasswd_path)
        settings.REGISTRY_USERNAME = SERVICE_USER
        try:
            user, password = "person10", "bench-password-cost-10"
            with open(registry.htpasswd_path, "a") as f:
                f.write(f"{user}:{htpasswd.hash_password(password, 10)}\n")
            image = build_image()
            registry.pusher(SERVICE_USER, SERVICE_PASSWORD).push_image("bench/app", "v1", image)
            url = f"{registry.url}/v2/bench/app/manifests/v1"
            accept = {"Accept": image.media_type}
            basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            n = lambda base: max(THREADS, int(base * scale))  # noqa: E731

            # Phase 1: htpasswd at cost 10.
            rate(requests.Session, url, {**accept, "Authorization": basic}, 3, 200)  # warm-up
            results["baseline_401"] = median_rate(
                rounds, requests.Session, url, accept, n(300), 401
            )
            results["htpasswd_seq"] = median_rate(
                rounds, requests.Session, url, {**accept, "Authorization": basic}, n(25), 200
            )
            results["htpasswd_par"] = median_rate(
                rounds,
                requests.Session,
                url,
                {**accept, "Authorization": basic},
                n(50),
                200,
                threads=THREADS,
            )

            # Phase 2: the same registry in token mode.
            bundle = tokens.write_bundle(root / "bundle.pem")
            config = yaml.safe_load(registry.config_path.read_text())
            config["auth"] = token_auth_section(
                "http://127.0.0.1:9", settings.TOKEN_SERVICE, settings.TOKEN_ISSUER, bundle
            )["auth"]
            registry.restart(config)
            access.grant("bench", user, "bench/*", "pull")
            token, _ = tokens.issue(
                user,
                [{"type": "repository", "name": "bench/app", "actions": ["pull"]}],
                settings.TOKEN_SERVICE,
            )
            bearer = {**accept, "Authorization": f"Bearer {token}"}
            rate(requests.Session, url, bearer, 3, 200)
            results["token_seq"] = median_rate(rounds, requests.Session, url, bearer, n(300), 200)
            results["token_par"] = median_rate(
                rounds, requests.Session, url, bearer, n(600), 200, threads=THREADS
            )
            results["baseline_401_token"] = median_rate(
                rounds, requests.Session, url, accept, n(300), 401
            )

            # Phase 3: the token endpoint in process.
            client = Client()
            params = {"service": settings.TOKEN_SERVICE, "scope": "repository:bench/app:pull"}

            def endpoint_rate(auth, count):
                started = time.perf_counter()
                for _ in range(count):
                    answer = client.get("/auth/token", params, HTTP_AUTHORIZATION=auth)
                    if answer.status_code != 200:
                        raise RuntimeError(f"token endpoint answered {answer.status_code}")
                return count / (time.perf_counter() - started)

            service_basic = (
                "Basic " + base64.b64encode(f"{SERVICE_USER}:{SERVICE_PASSWORD}".encode()).decode()
            )
            endpoint_rate(basic, 2)
            results["issue_cost10"] = statistics.median(
                endpoint_rate(basic, n(20)) for _ in range(rounds)
            )
            results["issue_cost4"] = statistics.median(
                endpoint_rate(service_basic, n(100)) for _ in range(rounds)
            )
            started, count = time.perf_counter(), n(300)
            for _ in range(count):
                tokens.issue(user, [], settings.TOKEN_SERVICE)
            results["sign_only"] = count / (time.perf_counter() - started)
        finally:
            registry.stop()
            connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)
    return results


def markdown(r, load, seconds):
    seq_ratio = r["token_seq"] / r["htpasswd_seq"]
    par_ratio = r["token_par"] / r["htpasswd_par"]
    lines = [
        f"<!-- {SECTION} -->",
        "## Token auth vs htpasswd (`bench/token_auth.py`)",
        "",
        f"Machine: {machine()}. Date: {common.today()}. Load average at the start: {load:.1f}. "
        f"Whole run {seconds:.0f} s. Debian's docker-registry, `HEAD` of a manifest, median of "
        "the rounds; both modes on the same registry in the same run. Goal: token mode at least "
        "5x the htpasswd rate at cost 10.",
        "",
        "| registry auth | requests/s, one client | requests/s, 8 threads |",
        "|---|---|---|",
        f"| none (401, the registry's ceiling; before / after the restart) | "
        f"{r['baseline_401']:.0f} / {r['baseline_401_token']:.0f} | |",
        f"| htpasswd, bcrypt cost 10 | {r['htpasswd_seq']:.1f} | {r['htpasswd_par']:.1f} |",
        f"| token (signed by the portal, reused) | {r['token_seq']:.0f} | {r['token_par']:.0f} |",
        f"| **ratio token / htpasswd** | **{seq_ratio:.0f}x** | **{par_ratio:.0f}x** |",
        "",
        "The portal's token endpoint (in process, database and rules included, one client):",
        "",
        "| tokens issued for | tokens/s |",
        "|---|---|",
        f"| a person's account (bcrypt cost 10, checked once per token) | {r['issue_cost10']:.1f} |",
        f"| the service account (cost 4) | {r['issue_cost4']:.0f} |",
        f"| signing alone (RS256, 2048-bit key; no password check) | {r['sign_only']:.0f} |",
        f"<!-- /{SECTION} -->",
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (smoke run)")
    parser.add_argument("--write", action="store_true", help="update bench/README.md")
    args = parser.parse_args()
    rounds, scale = (1, 0.2) if args.quick else (3, 1.0)
    print(f"machine: {machine()}; date: {common.today()}", flush=True)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    text = markdown(run(rounds, scale), load, time.perf_counter() - started)
    print(text)
    if args.write:
        common.write_section(text, marker=SECTION)


if __name__ == "__main__":
    main()
