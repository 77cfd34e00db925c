"""The image built from the Dockerfile and the compose stack run end to end, as a user would.

Run by `make test-container` (CI runs it after `make test` and `make test-postgres`); the default
pytest run leaves it out (marker `container`) because it builds an image.

The engine is Debian's podman with podman-compose from PyPI (there is no Docker engine on the
test machines), configured only through `tests/container/containers.conf` (CONTAINERS_CONF):
nothing machine-wide changes. No image registry is reachable either, so
`scripts/container-standins.sh` builds stand-ins for the two base images, once, and tags them
with the official names (the build uses --pull=never). What differs from the real bases:

- `python:3.11.13-slim-bookworm`: Debian bookworm (debootstrap minbase) with Debian's Python
  3.11.2 in /usr/bin and Debian's pip 23 in the venv, instead of Python 3.11.13 in /usr/local/bin
  with pip 24. The image size measured here is therefore not the released image's
  (bench/README.md has both).
- `registry:2.8.3`: Debian's docker-registry 2.8.2 (dynamically linked against glibc) at
  /bin/registry on that Debian base with GNU wget, instead of the static 2.8.3 on Alpine with
  busybox wget; the same default config file and arguments.

pip inside the build reaches PyPI through a TLS-intercepting proxy, so the host's CA bundle is
mounted into the build (read-only, build time only; it does not end up in the image).
"""

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from registry_admin.tests.harness import SKOPEO_BINARY, free_port, require_binary
from registry_admin.tests.images import build_image, sha256_digest, wait_for, write_oci_layout

pytestmark = [pytest.mark.container, pytest.mark.live]

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CONTAINERS_CONF = REPO / "tests" / "container" / "containers.conf"
IMAGE = "localhost/oyster:local"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
UID = "10001"

# A secret each run makes anew, so the log checks below cannot pass by accident.
SECRET_KEY = "container-test-" + secrets.token_urlsafe(40)
REGISTRY_PASSWORD = "service-" + secrets.token_urlsafe(24)
NOTIFICATIONS_TOKEN = "token-" + secrets.token_urlsafe(24)


def engine_env():
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def run(args, timeout=300, check=True, **kwargs):
    result = subprocess.run(
        [str(a) for a in args],
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )
    if check:
        assert result.returncode == 0, (
            f"{' '.join(map(str, args))} exited {result.returncode}\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def podman(*args, **kwargs):
    return run(["podman", *args], **kwargs)


@pytest.fixture(scope="module")
def image():
    """Stand-in bases (cached), then the Dockerfile built as it is, in Docker format."""
    for binary, package in (
        ("/usr/bin/podman", "podman"),
        ("/usr/bin/buildah", "buildah"),
        ("/usr/sbin/debootstrap", "debootstrap"),
        ("/usr/sbin/runc", "runc"),
        ("/usr/lib/podman/netavark", "netavark"),
        ("/usr/libexec/podman/catatonit", "catatonit"),
    ):
        require_binary(binary, f"install Debian's package: apt-get install {package}")
    require_binary(VENV_BIN / "podman-compose", "pip install -r requirements-dev.txt")
    run([REPO / "scripts" / "container-standins.sh"], timeout=900)
    # --format docker: podman's default (OCI) drops HEALTHCHECK with a warning.
    podman(
        "build",
        "--format",
        "docker",
        "--pull=never",
        "--volume",
        f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
        "--tag",
        IMAGE,
        REPO,
        timeout=900,
    )
    return IMAGE


@contextlib.contextmanager
def container(*args, name=None):
    name = name or f"oyster-test-{secrets.token_hex(4)}"
    podman("run", "--detach", "--name", name, *args)
    try:
        yield name
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def logs(name):
    result = podman("logs", name, check=False)
    return result.stdout + result.stderr


def image_env(**extra):
    env = {
        "SECRET_KEY": SECRET_KEY,
        "REGISTRY_PASSWORD": REGISTRY_PASSWORD,
        "NOTIFICATIONS_TOKEN": NOTIFICATIONS_TOKEN,
        "ALLOWED_HOSTS": "localhost",
        "SECURE_SSL_REDIRECT": "0",
        "WORKER_POLL_SECONDS": "0.5",
    }
    env.update(extra)
    return [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]


def wait_healthz(port, name, timeout=90):
    def healthy():
        state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        assert state == "running", f"{name} is {state}:\n{logs(name)[-3000:]}"
        with contextlib.suppress(requests.ConnectionError, requests.Timeout):
            url = f"http://127.0.0.1:{port}/healthz"
            return requests.get(url, headers={"Host": "localhost"}, timeout=3).status_code == 200
        return False

    wait_for(healthy, timeout=timeout, interval=0.5, message=f"{name} to answer /healthz")


# --- the image alone -----------------------------------------------------------------------


def test_web_serves_as_uid_10001_with_its_healthcheck_and_stops_cleanly(image):
    port = free_port()
    with container(*image_env(), "--publish", f"127.0.0.1:{port}:8000", image) as name:
        wait_healthz(port, name)
        assert podman("exec", name, "id", "-u").stdout.strip() == UID
        inspected = json.loads(podman("image", "inspect", image).stdout)[0]
        assert inspected["Config"]["User"] == f"{UID}:{UID}"
        # Kept only in Docker format (podman's default OCI format drops it).
        assert inspected["Healthcheck"]["Test"] == ["CMD", "python", "/app/docker/healthcheck.py"]
        assert podman("healthcheck", "run", name, check=False).returncode == 0
        # The registry's own binary, for the garbage collector (issue #13).
        version = podman("exec", name, "registry", "--version").stdout
        assert re.search(r"\bv?2\.8\.\d", version), version
        # Nothing but the runtime: pip is not in the venv.
        assert podman("exec", name, "python", "-m", "pip", check=False).returncode != 0
        podman("stop", "--time", "30", name)
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0, logs(name)[-3000:]
        assert "Shutting down: Master" in logs(name)


def test_all_mode_stops_gunicorn_and_the_worker_on_sigterm(image):
    port = free_port()
    # No --init: on App Service the start script itself is PID 1.
    args = (*image_env(), "--publish", f"127.0.0.1:{port}:8000", image, "all")
    with container(*args) as name:
        wait_healthz(port, name)
        wait_for(lambda: "Worker started" in logs(name), timeout=60, message="the worker")
        podman("stop", "--time", "30", name)
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        output = logs(name)
        # 0, not 137: both stopped on the SIGTERM, nothing had to be killed.
        assert state["ExitCode"] == 0, output[-3000:]
        assert "Shutting down: Master" in output
        assert "Worker stopped." in output
        assert "restarting in 5 s" not in output


def test_a_short_registry_password_stops_the_start_before_any_password_is_printed(image):
    result = podman(
        "run",
        "--rm",
        *image_env(REGISTRY_PASSWORD="x"),
        image,
        check=False,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "The password must be at least 12 characters long." in output
    assert "Created admin" not in output
    assert "Listening at" not in output


def test_an_unwritable_data_folder_is_named_with_the_fix(image, tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)  # owned by root, as a bind-mounted host folder usually is
    result = podman(
        "run",
        "--rm",
        *image_env(),
        "--volume",
        f"{data}:/data",
        image,
        check=False,
        timeout=120,
    )
    assert result.returncode != 0
    assert f"DATA_DIR /data is not writable by uid {UID}" in result.stderr
    assert f"chown -R {UID}:{UID}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "unable to open database file" not in result.stderr


# --- the compose stack, following the README ------------------------------------------------


def compose(project, *args, timeout=300, check=True, **kwargs):
    return run(
        [
            VENV_BIN / "podman-compose",
            "--project-name",
            project["name"],
            *[arg for name in project["files"] for arg in ("--file", project["dir"] / name)],
            *args,
        ],
        timeout=timeout,
        check=check,
        cwd=project["dir"],
        **kwargs,
    )


def containers_of(project):
    result = podman(
        "ps",
        "--all",
        "--no-trunc",
        "--filter",
        f"label=io.podman.compose.project={project['name']}",
        "--format",
        "{{.ID}} {{.Names}}",
    )
    return dict(reversed(line.split()) for line in result.stdout.splitlines() if line.strip())


def service_container(project, service):
    (name,) = [n for n in containers_of(project) if re.search(rf"[_-]{service}[_-]\d+$", n)]
    return name


def dotenv_from_example(path, **values):
    """`cp .env.example .env`, then the lines the README says to fill in."""
    text = (REPO / ".env.example").read_text()
    for key, value in values.items():
        text, count = re.subn(rf"^{key}=.*$", f"{key}={value}", text, flags=re.MULTILINE)
        assert count == 1, key
    path.write_text(text)


@pytest.fixture(scope="module")
def stack(image, tmp_path_factory):
    directory = tmp_path_factory.mktemp("compose")
    for name in ("docker-compose.yml", "docker-compose.online-gc.yml"):
        shutil.copy(REPO / name, directory / name)
    portal_port, registry_port = free_port(), free_port()
    dotenv_from_example(
        directory / ".env",
        SECRET_KEY=SECRET_KEY,
        REGISTRY_PASSWORD=REGISTRY_PASSWORD,
        NOTIFICATIONS_TOKEN=NOTIFICATIONS_TOKEN,
        # Free ports instead of 8000/5000: the machine runs other suites at the same time.
        PORTAL_PORT=portal_port,
        REGISTRY_PORT=registry_port,
    )
    project = {
        "name": f"oyster-test-{secrets.token_hex(3)}",
        "dir": directory,
        # The README's plain setup; the online collector's test adds its override later.
        "files": ["docker-compose.yml"],
        "portal": f"http://localhost:{portal_port}",
        "registry": f"127.0.0.1:{registry_port}",
    }
    try:
        # Plain `up`: podman 4.3 ignores `condition: service_healthy`, so all three start at
        # once, the case the start order must survive. The image is the one built above.
        compose(project, "up", "--detach", "--no-build")
        yield project
    finally:
        compose(project, "down", "--volumes", "--timeout", "10", check=False)


def admin_password(project):
    output = logs(service_container(project, "portal"))
    match = re.search(r"Created admin 'admin' with the generated password: (\S+)", output)
    return match and match.group(1)


def test_compose_starts_the_portal_then_the_registry_without_a_crash_loop(stack):
    portal = service_container(stack, "portal")
    wait_for(
        lambda: podman("healthcheck", "run", portal, check=False).returncode == 0,
        timeout=120,
        interval=1,
        message="the portal's health check",
    )

    def registry_answers():
        with contextlib.suppress(requests.ConnectionError, requests.Timeout):
            return requests.get(f"http://{stack['registry']}/v2/", timeout=3).status_code == 401
        return False

    wait_for(registry_answers, timeout=60, interval=0.5, message="the registry")
    registry = service_container(stack, "registry")
    state = json.loads(podman("inspect", registry).stdout)[0]
    assert state["RestartCount"] == 0
    output = logs(registry)
    assert "panic" not in output
    # The notification endpoint is logged with its headers at info; the token must not be.
    assert NOTIFICATIONS_TOKEN not in output
    assert REGISTRY_PASSWORD not in output
    # The admin password shows in the portal's log, once, as the README says.
    assert admin_password(stack)


def test_the_login_page_works_over_plain_http_on_localhost(stack):
    session = requests.Session()
    login = session.get(f"{stack['portal']}/login/", timeout=10, allow_redirects=False)
    assert login.status_code == 200, login.headers.get("Location")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
    response = session.post(
        f"{stack['portal']}/login/",
        data={
            "csrfmiddlewaretoken": token,
            "username": "admin",
            "password": admin_password(stack),
        },
        timeout=30,
        allow_redirects=False,
    )
    # A Secure cookie would not come back over http: the POST would fail its CSRF check.
    assert response.status_code == 302, response.text[:2000]
    assert session.get(f"{stack['portal']}/", timeout=10).status_code == 200
    # Django's admin renders with only the English message catalogs left in the image.
    admin = session.get(f"{stack['portal']}/django-admin/", timeout=10)
    assert admin.status_code == 200 and "Site administration" in admin.text
    stack["session"] = session


def test_a_push_by_a_user_added_in_the_container_reaches_the_audit_log(stack, tmp_path):
    require_binary(SKOPEO_BINARY, "install Debian's package: apt-get install skopeo")
    user, password = "pusher", "push-" + secrets.token_urlsafe(16)
    added = compose(
        stack,
        "exec",
        "-T",
        "portal",
        "python",
        "manage.py",
        "htpasswd",
        "add",
        "--password-stdin",
        user,
        check=False,
        input=password + "\n",
    )
    assert added.returncode == 0, added.stdout + added.stderr
    layout = tmp_path / "layout"
    write_oci_layout(str(layout), build_image(seed="container-test"), "v1")
    run(
        [
            SKOPEO_BINARY,
            "copy",
            "--dest-creds",
            f"{user}:{password}",
            "--dest-tls-verify=false",
            f"oci:{layout}:v1",
            f"docker://{stack['registry']}/compose/app:v1",
        ],
        timeout=120,
    )
    session = stack["session"]

    def in_audit_log():
        export = session.get(f"{stack['portal']}/audit/export.csv", timeout=10)
        assert export.status_code == 200
        return [line for line in export.text.splitlines() if "compose/app" in line and user in line]

    rows = wait_for(in_audit_log, timeout=30, interval=0.5, message="the push in the audit log")
    assert any("push" in row for row in rows)


def test_the_storage_scan_reads_the_registry_volume(stack):
    result = compose(stack, "exec", "-T", "portal", "python", "manage.py", "scan_storage", "--json")
    snapshot = json.loads(result.stdout)
    assert "compose/app" in json.dumps(snapshot)


def storage_files(project, service, *paths):
    """{path: size} of the files under `paths` in the registry volume, seen from `service`."""
    script = 'for p; do [ -e "$p" ] && find "$p" -type f -exec stat -c "%s %n" {} +; done; true'
    result = compose(project, "exec", "-T", service, "sh", "-c", script, "sh", *paths)
    return {
        line.split(" ", 1)[1]: int(line.split(" ", 1)[0]) for line in result.stdout.splitlines()
    }


def gc_in_worker(project, *args, check=True):
    # GC_GRACE_MINUTES cannot go below 1; GC_SETTLE_SECONDS=0 skips the two waits for pushes in
    # flight (none here).
    return compose(
        project,
        "exec",
        "-T",
        "-e",
        "GC_GRACE_MINUTES=1",
        "-e",
        "GC_SETTLE_SECONDS=0",
        "worker",
        "python",
        "manage.py",
        "garbage_collect",
        "--online",
        *args,
        check=check,
    )


def test_the_online_collector_override_lets_only_the_worker_write(stack, tmp_path):
    """docker-compose.online-gc.yml on the running stack, as the README says: an image pushed
    and deleted is collected by the worker into oyster-trash/, the other image still pulls."""
    require_binary(SKOPEO_BINARY, "install Debian's package: apt-get install skopeo")
    image = build_image(seed="online-gc-container-test")
    layout = tmp_path / "layout"
    write_oci_layout(str(layout), image, "v1")
    password = "gc-" + secrets.token_urlsafe(16)
    compose(
        stack,
        "exec",
        "-T",
        "portal",
        "python",
        "manage.py",
        "htpasswd",
        "add",
        "--password-stdin",
        "gc-pusher",
        input=password + "\n",
    )
    creds = f"gc-pusher:{password}"
    skopeo = [SKOPEO_BINARY, "copy", "--dest-tls-verify=false"]
    run(
        [
            *skopeo,
            "--dest-creds",
            creds,
            f"oci:{layout}:v1",
            f"docker://{stack['registry']}/online/gc:v1",
        ]
    )
    pushed = time.monotonic()
    deleted = compose(
        stack, "exec", "-T", "portal", "python", "manage.py", "delete_tag", "online/gc:v1"
    )
    assert "and its image" in deleted.stdout, deleted.stdout
    # The recycle bin holds the image first (RECYCLE_BIN_DAYS, 7 by default): purged now, the
    # collector may take it, as it would after a week.
    manage = [stack, "exec", "-T", "portal", "python", "manage.py", "recycle_bin"]
    held = compose(*manage, "list")
    assert "online/gc@" in held.stdout and "[held]" in held.stdout, held.stdout
    compose(*manage, "purge", "--older-than", "0")
    assert "The recycle bin is empty." in compose(*manage, "list").stdout

    # The README's setup: the worker's mount is read-only, and a run says what is missing.
    refused = gc_in_worker(stack, check=False)
    assert refused.returncode != 0
    assert "the registry's storage is mounted read-only" in refused.stderr, refused.stderr
    assert "the worker needs write access to the registry's storage" in refused.stderr

    stack["files"] = ["docker-compose.yml", "docker-compose.online-gc.yml"]
    compose(stack, "up", "--detach", "--no-build")
    portal, worker = service_container(stack, "portal"), service_container(stack, "worker")
    wait_for(
        lambda: podman("healthcheck", "run", portal, check=False).returncode == 0,
        timeout=120,
        interval=1,
        message="the portal's health check after the override",
    )
    mounts = {
        name: {
            m["Destination"]: m["RW"]
            for m in json.loads(podman("inspect", name).stdout)[0]["Mounts"]
        }
        for name in (portal, worker)
    }
    assert mounts[portal]["/var/lib/registry"] is False
    assert mounts[worker]["/var/lib/registry"] is True
    assert podman("exec", portal, "id", "-u").stdout.strip() == UID
    assert podman("exec", worker, "id", "-u").stdout.strip() == "0"
    wait_for(lambda: "Worker started" in logs(worker), timeout=60, message="the worker")

    # Data and links must be older than GC_GRACE_MINUTES (1, its minimum), and so must the
    # push's events: the only wait in this test.
    time.sleep(max(0.0, pushed + 65 - time.monotonic()))
    dry = gc_in_worker(stack, "--dry-run")
    match = re.search(r"([\d,]+) \(([\d,]+) bytes\) would go now", dry.stdout)
    assert match, dry.stdout + dry.stderr
    # Config and layer; the manifest stays with the registry's in-memory blob cache.
    assert (int(match.group(1)), int(match.group(2).replace(",", ""))) == (
        len(image.blobs),
        image.size,
    )

    collected = gc_in_worker(stack)
    match = re.search(r"Moved ([\d,]+) blobs \(([\d,]+) bytes", collected.stdout)
    assert match, collected.stdout + collected.stderr
    assert (int(match.group(1)), int(match.group(2).replace(",", ""))) == (
        len(image.blobs),
        image.size,
    )
    root = "/var/lib/registry"
    v2 = f"{root}/docker/registry/v2"
    digests = [sha256_digest(blob).split(":")[1] for blob in image.blobs]
    trash = storage_files(stack, "registry", f"{root}/oyster-trash")
    # oyster-trash/<batch>/sha256/<hex>: the blobs' bytes, nothing else (the probe is gone).
    assert sorted((p.rsplit("/", 1)[1], size) for p, size in trash.items()) == sorted(
        zip(digests, map(len, image.blobs), strict=True)
    )
    gone = [f"{v2}/blobs/sha256/{d[:2]}/{d}" for d in digests]
    assert storage_files(stack, "registry", *gone) == {}
    # The web portal still cannot write, and the worker left /data to uid 10001 (SQLite gives
    # its -wal/-shm files the database's owner).
    assert compose(stack, "exec", "-T", "portal", "touch", f"{root}/x", check=False).returncode != 0
    strays = compose(stack, "exec", "-T", "worker", "find", "/data", "!", "-user", UID)
    assert strays.stdout.strip() == ""
    # The image nobody deleted still pulls completely.
    run(
        [
            SKOPEO_BINARY,
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            creds,
            f"docker://{stack['registry']}/compose/app:v1",
            f"oci:{tmp_path / 'pulled'}:v1",
        ]
    )


def host_processes_of(container_ids):
    """Host pids whose cgroup or command line names one of the containers (conmon included)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            text = (proc / "cgroup").read_text() + (proc / "cmdline").read_bytes().decode(
                errors="replace"
            )
            if any(cid in text for cid in container_ids):
                found.append(int(proc.name))
    return found


def test_compose_down_stops_everything_and_the_worker_logs_a_clean_stop(stack):
    ids = containers_of(stack)
    assert {re.sub(r".*[_-](\w+)[_-]\d+$", r"\1", n) for n in ids} == {
        "portal",
        "worker",
        "registry",
    }
    assert host_processes_of(ids.values())
    worker = service_container(stack, "worker")
    wait_for(lambda: "Worker started" in logs(worker), timeout=60, message="the worker")
    # down removes the containers and their logs: follow the worker's log while it stops.
    log_path = stack["dir"] / "worker.log"
    with open(log_path, "w") as log_file:
        follower = subprocess.Popen(
            ["podman", "logs", "--follow", worker],
            env=engine_env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            compose(stack, "down", "--timeout", "30")
            follower.wait(timeout=60)
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait()
    assert "Worker stopped." in log_path.read_text()
    assert containers_of(stack) == {}
    assert host_processes_of(ids.values()) == []
    # The published ports are free again.
    for address in (stack["registry"], stack["portal"].removeprefix("http://")):
        host, port = address.split(":")
        with socket.socket() as probe:
            probe.settimeout(2)
            assert probe.connect_ex(("127.0.0.1", int(port))) != 0, address
    time.sleep(0)
