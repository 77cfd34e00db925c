"""`make screenshots`: the portal's main pages with realistic data, into docs/screenshots/*.png.

Starts its own registry (Debian's docker-registry) and portal (gunicorn on a file SQLite
database) in a temporary directory and seeds them the way a small team would: registry users
made with `manage.py htpasswd`, images pushed over the registry API as those users (several
versions, a multi-platform base image, a Docker-format image, layers shared between
repositories), pulls, deletes, a retention rule saved in the page, a reconcile and two storage
scans. The registry's own notifications feed the audit log; the 30 days before today are
backfilled through the same webhook with past pushes and pulls of the same images, so the
dashboard's chart has a month to draw. Each page is then rendered at 1280x900 in Debian's
Chromium. Takes about a minute; nothing outside the temporary directory and the output folder
is touched.
"""

import argparse
import gzip
import io
import json
import random
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from registry_admin.registry_config import EVENTS_PATH  # noqa: E402
from registry_admin.tests.harness import (  # noqa: E402
    CHROMIUM_BINARY,
    NOTIFICATIONS_TOKEN,
    PUSH_USER,
    SERVICE_PASSWORD,
    SERVICE_USER,
    start_registry,
)
from registry_admin.tests.images import (  # noqa: E402
    ALL_MANIFEST_TYPES,
    OCI_INDEX,
    ImageIndex,
    RegistryPusher,
    build_image,
)
from tests.portal_process import PortalProcess  # noqa: E402

VIEWPORT = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
ADMIN = ("admin", "screenshots-admin-password")
PUBLIC_HOST = "registry.example.com"
# Registry accounts: people, CI and deploy robots. Passwords are throwaway: the registry lives
# only as long as this script.
REGISTRY_USERS = ["ci-bot", "release-bot", "deploy-prod", "dana", "lee"]
NOW = datetime.now(UTC).replace(microsecond=0)
rng = random.Random(20251127)


def password_of(user):
    return f"{user}-screenshot-password"


def layer(size, name):
    """A gzip'd tar of one file of incompressible bytes, so sizes look like real layers."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        tar.addfile(info, io.BytesIO(rng.randbytes(size)))
    return gzip.compress(raw.getvalue(), mtime=0)


def days_ago(days, hour=10):
    moment = (NOW - timedelta(days=days)).replace(hour=hour, minute=rng.randrange(60), second=0)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def image(layers, created, **kwargs):
    return build_image(layers=layers, created=created, **kwargs)


def multi_platform(created, base_sizes):
    """An OCI index over linux/amd64, linux/arm64/v8 and linux/arm/v7 children."""
    platforms = [("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "arm", "v7")]
    children, entries = [], []
    for (os_name, arch, variant), size in zip(platforms, base_sizes, strict=True):
        child = image(
            [layer(size, f"rootfs-{arch}.bin")],
            created,
            os_name=os_name,
            architecture=arch,
            variant=variant,
            labels={
                "org.opencontainers.image.title": "base",
                "org.opencontainers.image.vendor": "Example Co",
            },
            cmd=["/bin/sh"],
        )
        children.append(child)
        platform = {
            "os": os_name,
            "architecture": arch,
            **({"variant": variant} if variant else {}),
        }
        entries.append(
            {
                "mediaType": child.media_type,
                "digest": child.digest,
                "size": len(child.manifest),
                "platform": platform,
            }
        )
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, indent=2
    ).encode()
    return ImageIndex(children=children, platforms=platforms, manifest=manifest)


def seed_images(registry):
    """Push the team's images as the users who would push them; returns [(user, repo, tag, image)]."""
    base_layer = layer(900_000, "rootfs.bin")
    runtime_layer = layer(1_400_000, "usr/lib/python3.tar")
    pushes = []

    def push(user, repository, tag, img):
        RegistryPusher(registry.url, user, password_of(user)).push_image(repository, tag, img)
        pushes.append((user, repository, tag, img))

    for tag, created, sizes in [
        ("3.19", days_ago(70), (820_000, 780_000, 700_000)),
        ("3.20", days_ago(12), (860_000, 810_000, 730_000)),
    ]:
        push("release-bot", "platform/base", tag, multi_platform(created, sizes))
    push("release-bot", "platform/base", "latest", pushes[-1][3])

    labels = {
        "org.opencontainers.image.source": "https://git.example.com/team/api",
        "org.opencontainers.image.revision": "4f1c2e9",
    }
    api_versions = [("1.0.0", 58), ("1.1.0", 41), ("1.2.0", 19), ("1.2.1", 6)]
    for tag, age in api_versions:
        app = image(
            [base_layer, runtime_layer, layer(rng.randrange(150_000, 400_000), "srv/app.tar")],
            days_ago(age),
            labels={**labels, "org.opencontainers.image.version": tag},
            cmd=["gunicorn", "api.wsgi", "--bind", "0.0.0.0:8080"],
        )
        push("ci-bot", "team/api", tag, app)
    push("ci-bot", "team/api", "latest", pushes[-1][3])
    for tag, age in [("pr-118", 45), ("pr-121", 33), ("pr-127", 2)]:
        push(
            "ci-bot",
            "team/api",
            tag,
            image([base_layer, runtime_layer, layer(250_000, "srv/app.tar")], days_ago(age)),
        )

    for tag, age in [("2.3.0", 40), ("2.4.0", 9)]:
        web = image(
            [base_layer, layer(600_000, "usr/share/nginx.tar"), layer(320_000, "srv/www.tar")],
            days_ago(age),
            docker=True,
            cmd=["nginx", "-g", "daemon off;"],
        )
        push("ci-bot", "team/web", tag, web)
    push("ci-bot", "team/web", "latest", pushes[-1][3])

    for tag, age in [("0.9.0", 26), ("1.0.0", 4)]:
        push(
            "ci-bot",
            "team/worker",
            tag,
            image([base_layer, runtime_layer, layer(180_000, "srv/worker.tar")], days_ago(age)),
        )
    for tag, age in [("2024.11", 90), ("2025.01", 15)]:
        push(
            "dana",
            "tools/ci-runner",
            tag,
            image([layer(2_200_000, "opt/toolchain.tar")], days_ago(age), docker=True),
        )
    push(
        "lee", "sandbox/lee/experiment", "try-1", image([layer(1_100_000, "data.bin")], days_ago(3))
    )
    push(
        "lee", "sandbox/lee/experiment", "try-2", image([layer(1_050_000, "data.bin")], days_ago(1))
    )
    return pushes


def pull(registry, user, repository, tag):
    response = requests.get(
        f"{registry.url}/v2/{repository}/manifests/{tag}",
        auth=(user, password_of(user)),
        headers={"Accept": ALL_MANIFEST_TYPES},
        timeout=10,
    )
    response.raise_for_status()


def registry_event(action, user, repository, tag, img, when):
    """One event shaped like distribution 2.8's notifications (see ../shared/realenv)."""
    digest = img.digest
    return {
        "id": str(uuid.uuid4()),
        "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%f000Z"),
        "action": action,
        "target": {
            "mediaType": img.media_type,
            "size": len(img.manifest),
            "digest": digest,
            "length": len(img.manifest),
            "repository": repository,
            "url": f"http://{PUBLIC_HOST}/v2/{repository}/manifests/{digest}",
            "tag": tag,
        },
        "request": {
            "id": str(uuid.uuid4()),
            "addr": f"10.0.{rng.randrange(1, 4)}.{rng.randrange(2, 250)}:{rng.randrange(30000, 60000)}",
            "host": PUBLIC_HOST,
            "method": "PUT" if action == "push" else "GET",
            "useragent": "docker/27.3.1 go/go1.22.7 os/linux arch/amd64"
            if user != "ci-bot"
            else "buildkit/v0.17",
        },
        "actor": {"name": user},
        "source": {"addr": "registry:5000", "instanceID": "7a3c1e0b-screenshots"},
    }


def backfill_history(portal, pushes):
    """The month before today: the same images pushed and pulled on past days."""
    events = []
    for day in range(1, 30):
        when = NOW - timedelta(days=day)
        for _ in range(rng.randrange(0, 4)):
            user, repository, tag, img = rng.choice(pushes)
            events.append(
                registry_event(
                    "push", user, repository, tag, img, when - timedelta(hours=rng.randrange(1, 9))
                )
            )
        for _ in range(rng.randrange(3, 12)):
            _, repository, tag, img = rng.choice(pushes)
            user = rng.choice(["deploy-prod", "deploy-prod", "ci-bot", "dana", "lee"])
            events.append(
                registry_event(
                    "pull", user, repository, tag, img, when - timedelta(hours=rng.randrange(1, 9))
                )
            )
    session = requests.Session()
    for event in events:
        response = session.post(
            portal.url + EVENTS_PATH,
            data=json.dumps({"events": [event]}),
            headers={
                "Authorization": f"Bearer {NOTIFICATIONS_TOKEN}",
                "Content-Type": "application/vnd.docker.distribution.events.v1+json",
            },
            timeout=10,
        )
        response.raise_for_status()


def wait_for_quiet_audit(portal, quiet=1.5, timeout=60):
    """Return once the registry's notifications stopped arriving (the audit count is stable)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = portal.query("SELECT COUNT(*) FROM registry_admin_auditevent")[0][0]
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.2)


def seed(portal, registry):
    for user in REGISTRY_USERS:
        subprocess.run(
            [sys.executable, "manage.py", "htpasswd", "add", user, "--password-stdin"],
            cwd=ROOT,
            env=portal.env,
            input=password_of(user) + "\n",
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
    # The harness's own push account is no one's: its removal is an audit entry like any other.
    portal.manage("htpasswd", "delete", PUSH_USER)
    pushes = seed_images(registry)
    for user, repository, tag in [
        ("deploy-prod", "team/api", "1.2.1"),
        ("deploy-prod", "team/web", "2.4.0"),
        ("deploy-prod", "team/worker", "1.0.0"),
        ("dana", "platform/base", "3.20"),
        ("lee", "team/api", "latest"),
    ]:
        pull(registry, user, repository, tag)
    # Before the deletes below: a past push of a tag is what the index would see as a push.
    backfill_history(portal, pushes)
    wait_for_quiet_audit(portal)
    portal.manage("run_worker", "--once", "--kind", "details")
    portal.manage("sync_registry")
    portal.manage("scan_storage")
    # What cleaning up looks like: a pull-request build untagged, an experiment deleted.
    portal.manage("delete_tag", "team/api:pr-118")
    experiment = next(
        img for _, repo, tag, img in pushes if repo.startswith("sandbox/") and tag == "try-1"
    )
    portal.manage("delete_tag", f"sandbox/lee/experiment@{experiment.digest}")
    wait_for_quiet_audit(portal)
    portal.manage("scan_storage")


def render(portal, out):
    from playwright.sync_api import expect, sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM_BINARY,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
            ],
        )
        page = browser.new_page(viewport=VIEWPORT, timezone_id="UTC", locale="en-GB")
        page.goto(f"{portal.url}/login/")
        page.get_by_label("Username").fill(ADMIN[0])
        page.get_by_label("Password").fill(ADMIN[1])
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("button", name=f"Log out {ADMIN[0]}")).to_be_visible()

        page.goto(f"{portal.url}/retention/new/")
        page.get_by_label("Name", exact=True).fill("Pull-request builds")
        page.get_by_label("Repositories").fill("team/*")
        page.get_by_label("Always keep tags matching").fill(r"^(latest|\d+\.\d+\.\d+)$")
        page.get_by_label("Delete only tags older than (days)").fill("30")
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_role("heading", name="Retention rules")).to_be_visible()

        shots = [
            ("dashboard", "/", "#audit-activity-chart[data-rendered=true]"),
            ("repositories", "/repositories/", None),
            ("repository", "/repositories/team/api/", None),
            ("tag", "/repositories/team/api/-/tags/1.2.1/", None),
            ("tag-multi-platform", "/repositories/platform/base/-/tags/3.20/", None),
            ("users", "/users/", None),
            ("storage", "/storage/", "#storage-history-chart[data-rendered=true]"),
            ("audit-log", "/audit/", None),
            ("retention", "/retention/", None),
        ]
        page.emulate_media(color_scheme="light")
        for name, path, ready in shots:
            shoot(page, portal.url + path, ready, out / f"{name}.png")
        # The dark theme (the system setting, which the default "auto" theme follows).
        page.emulate_media(color_scheme="dark")
        shoot(page, portal.url + "/", shots[0][2], out / "dashboard-dark.png")
        shoot(page, portal.url + "/storage/", shots[6][2], out / "storage-dark.png")
        # A phone held upright: the whole dashboard, header wrapped, cards stacked.
        page.emulate_media(color_scheme="light")
        page.set_viewport_size(PHONE)
        shoot(page, portal.url + "/", shots[0][2], out / "dashboard-phone.png", full_page=True)
        browser.close()


def shoot(page, url, ready, path, full_page=False):
    response = page.goto(url)
    if response.status != 200:
        raise SystemExit(f"{url} answered {response.status}")
    if ready:
        page.locator(ready).wait_for()
    page.screenshot(path=path, full_page=full_page)
    print(f"  {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oyster-screenshots-") as work:
        work = Path(work)
        portal = PortalProcess(work / "portal", workers=2)
        registry = start_registry(work / "registry", portal.url)
        try:
            portal.env.update(
                {
                    "REGISTRY_URL": registry.url,
                    "REGISTRY_USERNAME": SERVICE_USER,
                    "REGISTRY_PASSWORD": SERVICE_PASSWORD,
                    "REGISTRY_PUBLIC_HOST": PUBLIC_HOST,
                    "HTPASSWD_PATH": str(registry.htpasswd_path),
                    # The registry runs bcrypt on every request: a low cost keeps seeding quick.
                    "HTPASSWD_BCRYPT_ROUNDS": "4",
                    "STORAGE_BACKEND": "filesystem",
                    "STORAGE_FILESYSTEM_ROOT": str(registry.storage_root),
                    "PORTAL_ADMIN_USERNAME": ADMIN[0],
                    "PORTAL_ADMIN_PASSWORD": ADMIN[1],
                    # Production settings serve hashed static files, as the image does.
                    "STATIC_ROOT": str(work / "static"),
                }
            )
            portal.manage("collectstatic", "--noinput")
            portal.manage("migrate", "--noinput")
            portal.manage("ensure_admin")
            portal.start()
            print(f"Seeding a registry at {registry.url} and the portal at {portal.url}...")
            seed(portal, registry)
            # A running worker, so the dashboard shows its heartbeat as an operator would.
            worker = subprocess.Popen(
                [sys.executable, "manage.py", "run_worker", "--kind", "noop"],
                cwd=ROOT,
                env=portal.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                time.sleep(3)
                print(f"Rendering into {options.out}:")
                render(portal, options.out)
            finally:
                worker.terminate()
                worker.wait(timeout=30)
        finally:
            portal.stop()
            registry.stop()


if __name__ == "__main__":
    main()
