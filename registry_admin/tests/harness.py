"""Session fixtures that start real components: the registry, skopeo, Azurite.

A missing component fails the run with a sentence naming it and how to install it; nothing is
skipped. `make test` installs all of them.

A test that starts one of them is marked `live`, which keeps it out of `make test-fast` (the
loop that must pass with none of them installed): through a fixture declared with
`live_fixture`, or with `@pytest.mark.live` when it starts one itself. conftest.py fails a test
not marked `live` the moment it starts an `outside_program`, so a missed mark shows in every run.
"""

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from django.core.management.commands import flush as flush_command
from django.core.signals import request_finished, request_started

from registry_admin import htpasswd as htpasswd_module
from registry_admin.registry_config import EVENTS_PATH, dump_yaml, local_registry_config

from .images import RegistryPusher

REPO_ROOT = Path(__file__).resolve().parents[2]
REGISTRY_BINARY = "/usr/bin/docker-registry"
SKOPEO_BINARY = "/usr/bin/skopeo"
AZURITE_BINARY = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"
OIDC_PROVIDER_SCRIPT = REPO_ROOT / "tests" / "oidc" / "provider.mjs"
OIDC_PROVIDER_PACKAGE = REPO_ROOT / "node_modules" / "oidc-provider" / "package.json"
CHROMIUM_BINARY = "/usr/bin/chromium"

# Programs a machine may lack (each its own package) or that are whole servers: a test that
# starts one needs the `live` mark. Python's own subprocesses (manage.py, `python -c`) are not
# among them: they need nothing the venv lacks.
OUTSIDE_PROGRAMS = frozenset(
    {
        "docker-registry",
        "registry",
        "skopeo",
        "chromium",
        "chrome",
        "node",
        "nodejs",
        "azurite",
        "azurite-blob",
        "node",
        "podman",
        "gunicorn",
        "postgres",
        "pg_ctl",
        "initdb",
        "psql",
    }
)
# The repository's own scripts start those programs (the registry, PostgreSQL, gunicorn, podman).
OUTSIDE_PROGRAM_DIRECTORIES = (REPO_ROOT / "scripts", REPO_ROOT / "docker")

# Names of fixtures that start an outside program; conftest.py marks every test using one (even
# through another fixture) `live`.
LIVE_FIXTURES = set()


def live_fixture(function=None, **kwargs):
    """`pytest.fixture` for a fixture that starts an outside program: tests using it are `live`."""

    def declare(function):
        LIVE_FIXTURES.add(kwargs.get("name", function.__name__))
        return pytest.fixture(**kwargs)(function)

    return declare(function) if function else declare


def outside_program(args, executable=None, shell=False):
    """The outside program a `subprocess.Popen(args, ...)` would start, or None."""
    if isinstance(args, (str, bytes, os.PathLike)):
        args = shlex.split(os.fsdecode(args)) if shell else [args]
    argv = [os.fsdecode(a) for a in args]
    program = Path(os.fsdecode(executable) if executable else argv[0] if argv else "")
    if program.name in OUTSIDE_PROGRAMS:
        return program.name
    if "gunicorn" in argv[1:3]:  # `python -m gunicorn`
        return "gunicorn"
    resolved = (REPO_ROOT / program).resolve() if not program.is_absolute() else program
    if any(resolved.is_relative_to(d) for d in OUTSIDE_PROGRAM_DIRECTORIES):
        return str(resolved.relative_to(REPO_ROOT))
    return None


SERVICE_USER = "oyster-service"
SERVICE_PASSWORD = "service-" + "x" * 40
PUSH_USER = "pusher"
PUSH_PASSWORD = "pusher-password-123"
NOTIFICATIONS_TOKEN = "test-notifications-token-0123456789"


def require_binary(path, package_hint):
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{path} is missing: {package_hint}. `make test` installs it; run that instead of bare pytest.",
            pytrace=False,
        )


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=15.0, process=None, log_path=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            log = Path(log_path).read_text()[-2000:] if log_path else ""
            raise RuntimeError(f"process exited with {process.returncode} before listening:\n{log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def stop_process(process, timeout=10):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class RunningRegistry:
    """A live Debian `docker-registry` with htpasswd auth, deletes on, notifications on."""

    url: str
    port: int
    root: Path
    storage_root: Path
    htpasswd_path: Path
    config_path: Path
    log_path: Path
    process: subprocess.Popen
    notify_url: str

    def pusher(self, username=PUSH_USER, password=PUSH_PASSWORD):
        return RegistryPusher(self.url, username, password)

    def restart(self, config=None):
        """Restart the process (optionally with a changed config dict); same port and storage."""
        stop_process(self.process)
        if config is not None:
            self.config_path.write_text(dump_yaml(config))
        self.process = _start_registry_process(self.config_path, self.log_path)
        wait_for_port(self.port, process=self.process, log_path=self.log_path)

    def stop(self):
        stop_process(self.process)
        # Its last deliveries may still be writing in the live server.
        wait_for_quiet_notifications(quiet=0.1)

    def garbage_collect(self, dry_run=False):
        args = [REGISTRY_BINARY, "garbage-collect", str(self.config_path)]
        if dry_run:
            args.append("--dry-run")
        return subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)


def _start_registry_process(config_path, log_path):
    log = open(log_path, "ab")  # noqa: SIM115  (kept open for the process's lifetime)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "AWS_"))}
    return subprocess.Popen(
        [REGISTRY_BINARY, "serve", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )


def start_registry(root, notify_base_url, delete_enabled=True):
    """Start a registry under `root`; the caller stops it."""
    require_binary(REGISTRY_BINARY, "install Debian's package: apt-get install docker-registry")
    root = Path(root)
    storage_root = root / "storage"
    storage_root.mkdir(parents=True, exist_ok=True)
    htpasswd_path = root / "auth" / "htpasswd"
    htpasswd_path.parent.mkdir(parents=True, exist_ok=True)
    htpasswd_path.write_text(
        f"{SERVICE_USER}:{htpasswd_module.hash_password(SERVICE_PASSWORD, 4)}\n"
        f"{PUSH_USER}:{htpasswd_module.hash_password(PUSH_PASSWORD, 4)}\n"
    )
    port = free_port()
    config = local_registry_config(
        listen=f"127.0.0.1:{port}",
        storage_root=storage_root,
        htpasswd_path=htpasswd_path,
        portal_url=notify_base_url,
        token=NOTIFICATIONS_TOKEN,
        delete_enabled=delete_enabled,
    )
    config_path = root / "config.yml"
    config_path.write_text(dump_yaml(config))
    log_path = root / "registry.log"
    process = _start_registry_process(config_path, log_path)
    wait_for_port(port, process=process, log_path=log_path)
    url = f"http://127.0.0.1:{port}"
    # Ready when /v2/ answers (401 without credentials).
    deadline = time.monotonic() + 10
    while requests.get(f"{url}/v2/", timeout=2).status_code != 401:
        if time.monotonic() > deadline:
            raise RuntimeError("registry did not answer /v2/")
        time.sleep(0.05)
    return RunningRegistry(
        url=url,
        port=port,
        root=root,
        storage_root=storage_root,
        htpasswd_path=htpasswd_path,
        config_path=config_path,
        log_path=log_path,
        process=process,
        notify_url=notify_base_url,
    )


def registry_settings(settings, reg):
    """Point the portal's settings at a RunningRegistry."""
    settings.REGISTRY_URL = reg.url
    settings.REGISTRY_USERNAME = SERVICE_USER
    settings.REGISTRY_PASSWORD = SERVICE_PASSWORD
    settings.HTPASSWD_PATH = str(reg.htpasswd_path)
    settings.NOTIFICATIONS_TOKEN = NOTIFICATIONS_TOKEN
    settings.STORAGE_BACKEND = "filesystem"
    settings.STORAGE_FILESYSTEM_ROOT = str(reg.storage_root)
    settings.REGISTRY_PUBLIC_HOST = f"127.0.0.1:{reg.port}"
    return reg


@live_fixture(scope="session")
def registry_server(live_server, tmp_path_factory):
    """The session's real registry; its notifications go to the live test server."""
    reg = start_registry(tmp_path_factory.mktemp("registry"), live_server.url)
    yield reg
    reg.stop()


# The registry delivers its notifications to the live server shortly after the request that
# caused them, and retries a failed one later. A delivery still writing while a transactional
# test flushes the database makes the flush fail ("database table is locked" on SQLite, a
# deadlock with TRUNCATE on PostgreSQL). So every flush holds the deliveries (`deliveries_held`):
# a delivery arriving meanwhile waits at its start, and the flush waits for those in flight.
# `registry` also waits for them to settle, so a test's late events are not blamed on the next.
_last_event_delivery = [0.0]
# The live server's request threads handling a delivery; a thread that ended is not one, even
# if its request never reached `request_finished` (a client gone mid-response).
_delivery_threads = set()
_delivery_lock = threading.Lock()
_delivery_changed = threading.Condition(_delivery_lock)
_deliveries_on_hold = [False]
HOLD_TIMEOUT = 60


def _deliveries_in_flight():
    """Under `_delivery_lock`."""
    _delivery_threads.difference_update(
        [thread for thread in _delivery_threads if not thread.is_alive()]
    )
    return bool(_delivery_threads)


def _note_event_delivery(sender, environ=None, **kwargs):
    if environ and environ.get("PATH_INFO", "").startswith(EVENTS_PATH):
        with _delivery_changed:
            _delivery_changed.wait_for(lambda: not _deliveries_on_hold[0], HOLD_TIMEOUT)
            _last_event_delivery[0] = time.monotonic()
            _delivery_threads.add(threading.current_thread())


def _note_delivery_finished(sender, **kwargs):
    with _delivery_changed:
        if threading.current_thread() in _delivery_threads:
            _delivery_threads.discard(threading.current_thread())
            _last_event_delivery[0] = time.monotonic()
            _delivery_changed.notify_all()


request_started.connect(_note_event_delivery, dispatch_uid="oyster-harness-event-deliveries")
request_finished.connect(_note_delivery_finished, dispatch_uid="oyster-harness-event-finished")


@contextlib.contextmanager
def deliveries_held(timeout=HOLD_TIMEOUT):
    """No notification delivery writes to the database inside the block: new ones wait at their
    start, the block begins once those in flight ended (or after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    with _delivery_changed:
        _deliveries_on_hold[0] = True
        # A thread that died mid-request never notifies: look again every 50 ms.
        while _deliveries_in_flight() and time.monotonic() < deadline:
            _delivery_changed.wait(0.05)
    try:
        yield
    finally:
        with _delivery_changed:
            _deliveries_on_hold[0] = False
            _delivery_changed.notify_all()


def _flush_with_deliveries_held(self, *args, **options):
    with deliveries_held():
        return _flush_handle(self, *args, **options)


_flush_handle = flush_command.Command.handle
flush_command.Command.handle = _flush_with_deliveries_held


def wait_for_quiet_notifications(quiet=0.3, timeout=5.0):
    """Return once no notification is being handled and none arrived for `quiet` seconds (at
    most `timeout` seconds)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        with _delivery_lock:
            idle = not _deliveries_in_flight()
            last = _last_event_delivery[0]
        if idle and time.monotonic() - max(start, last) >= quiet:
            return
        time.sleep(0.05)


class QuietHandler(BaseHTTPRequestHandler):
    """A small test server's request handler: no access log on stderr, one way to answer."""

    def answer(self, status, headers, body=b""):
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(handler_class, host="127.0.0.1"):
    """`handler_class` served on a free port of `host` from a daemon thread for the `with`
    block; yields the server, whose base URL is `server.url`."""
    server = ThreadingHTTPServer((host, 0), handler_class)
    server.url = f"http://{host}:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def registry(registry_server, settings):
    """The session registry, with the portal's settings pointed at it for this test."""
    if registry_server.process.poll() is not None:
        registry_server.restart()
    yield registry_settings(settings, registry_server)
    wait_for_quiet_notifications()


@pytest.fixture
def index_updates_off():
    """Notifications are still stored but the index no longer follows them (as if they were lost)."""
    from registry_admin import index, signals

    signals.events_recorded.disconnect(dispatch_uid="index")
    yield
    signals.events_recorded.connect(index.on_events_recorded, dispatch_uid="index")


@pytest.fixture
def silent_port():
    """A loopback port that accepts connections and never answers (a hung registry)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                break

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@dataclass
class Skopeo:
    binary: str
    registry_url: str

    def copy_to_registry(self, layout_dir, tag, repo, username, password, extra=()):
        dest_host = self.registry_url.split("://", 1)[1]
        return subprocess.run(
            [
                self.binary,
                "--insecure-policy",
                "copy",
                "--dest-creds",
                f"{username}:{password}",
                "--dest-tls-verify=false",
                *extra,
                f"oci:{layout_dir}:{tag}",
                f"docker://{dest_host}/{repo}:{tag}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def inspect(self, repo, tag, username=None, password=None):
        """`skopeo inspect --raw` as that user, or anonymously without one."""
        return self._run("inspect", "--raw", *self._creds(username, password), repo=repo, tag=tag)

    def delete(self, repo, tag, username, password):
        return self._run("delete", *self._creds(username, password), repo=repo, tag=tag)

    @staticmethod
    def _creds(username, password):
        return ["--creds", f"{username}:{password}"] if username else ["--no-creds"]

    def _run(self, *args, repo, tag):
        host = self.registry_url.split("://", 1)[1]
        return subprocess.run(
            [self.binary, *args, "--tls-verify=false", f"docker://{host}/{repo}:{tag}"],
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture
def skopeo(registry):
    require_binary(SKOPEO_BINARY, "install Debian's package: apt-get install skopeo")
    return Skopeo(binary=SKOPEO_BINARY, registry_url=registry.url)


@dataclass
class RunningAzurite:
    port: int
    account_name: str
    account_key: str
    process: subprocess.Popen
    location: Path
    scheme: str = "http"

    @property
    def account_url(self):
        return f"{self.scheme}://127.0.0.1:{self.port}/{self.account_name}"

    @property
    def connection_string(self):
        return (
            f"DefaultEndpointsProtocol={self.scheme};"
            f"AccountName={self.account_name};AccountKey={self.account_key};"
            f"BlobEndpoint={self.account_url};"
        )

    def stop(self):
        stop_process(self.process)


# Azurite's well-known development account (public, documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def start_azurite(location, tls=None, in_memory=False):
    """Azurite on a free port; `tls=(cert_path, key_path)` serves HTTPS with OAuth checking on
    (`--oauth basic`: bearer tokens are decoded and their audience, issuer and lifetime checked,
    not their signature), which Azure's SDK needs before it sends a token. `in_memory` keeps
    its data in memory only (`location` then holds the log alone). Measured while writing
    bench/gc_delete.py: uploads to an Azurite with a location slowed down as it filled (from
    6 to 24 ms each between 1,000 and 20,000 blobs), in memory they did not."""
    require_binary(
        AZURITE_BINARY, "install it with npm: npm install --no-save azurite (see the Makefile)"
    )
    port = free_port()
    log_path = Path(location) / "azurite.log"
    log = open(log_path, "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [
            str(AZURITE_BINARY),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            *(["--inMemoryPersistence"] if in_memory else ["--location", str(location)]),
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--loose",
            "--silent",
            *(["--cert", str(tls[0]), "--key", str(tls[1]), "--oauth", "basic"] if tls else []),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, timeout=30, process=process, log_path=log_path)
    return RunningAzurite(
        port=port,
        account_name=AZURITE_ACCOUNT,
        account_key=AZURITE_KEY,
        process=process,
        location=Path(location),
        scheme="https" if tls else "http",
    )


@live_fixture(scope="session")
def azurite(tmp_path_factory):
    """A real Azurite blob service on a free loopback port."""
    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


@live_fixture(scope="session")
def browser_type_launch_args():
    """pytest-playwright: Debian's Chromium, never a downloaded browser."""
    require_binary(CHROMIUM_BINARY, "install Debian's package: apt-get install chromium")
    return {
        "executable_path": CHROMIUM_BINARY,
        "headless": True,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


def child_database_url():
    """A DATABASE_URL for a child process that must see this test's database (SQLite or PG)."""
    from urllib.parse import quote

    from django.db import connection

    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@dataclass
class RunningOidcProvider:
    """npm's oidc-provider (tests/oidc/provider.mjs) with one confidential client that must use
    PKCE; anyone signs in with any password, their groups read from `accounts_path`."""

    issuer: str
    client_id: str
    client_secret: str
    accounts_path: Path
    tamper_path: Path
    log_path: Path
    process: subprocess.Popen

    def set_groups(self, login, groups):
        accounts = json.loads(self.accounts_path.read_text() or "{}")
        accounts[login] = {"groups": list(groups)}
        self.accounts_path.write_text(json.dumps(accounts))

    def tamper(self, mode):
        """The token endpoint's next ID tokens spoiled (expired, wrong-aud, forged, ...); None
        for honest ones."""
        self.tamper_path.write_text(json.dumps({"mode": mode} if mode else {}))

    def reset(self):
        self.accounts_path.write_text("{}")
        self.tamper(None)

    def stop(self):
        stop_process(self.process)


def start_oidc_provider(location, redirect_uris):
    """The test OpenID Provider on a free loopback port, accepting `redirect_uris`."""
    node = shutil.which("node") or "/usr/bin/node"
    require_binary(node, "install Debian's nodejs package: apt-get install nodejs npm")
    if not OIDC_PROVIDER_PACKAGE.is_file():
        pytest.fail(
            "node_modules/oidc-provider is missing: `npm ci` (scripts/install-test-deps.sh) "
            "installs it",
            pytrace=False,
        )
    location = Path(location)
    port = free_port()
    client_id, client_secret = "oyster-portal", "client-secret-" + "s" * 32
    accounts_path, tamper_path = location / "accounts.json", location / "tamper.json"
    accounts_path.write_text("{}")
    tamper_path.write_text("{}")
    config_path = location / "provider.json"
    config_path.write_text(
        json.dumps(
            {
                "port": port,
                "accounts": str(accounts_path),
                "tamper": str(tamper_path),
                "clients": [
                    {
                        "client_id": client_id,
                        "client_secret": client_secret,
                        "redirect_uris": list(redirect_uris),
                        "grant_types": ["authorization_code"],
                        "response_types": ["code"],
                        "token_endpoint_auth_method": "client_secret_basic",
                    }
                ],
            }
        )
    )
    log_path = location / "provider.log"
    log = open(log_path, "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [node, str(OIDC_PROVIDER_SCRIPT), str(config_path)],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, timeout=30, process=process, log_path=log_path)
    return RunningOidcProvider(
        issuer=f"http://127.0.0.1:{port}",
        client_id=client_id,
        client_secret=client_secret,
        accounts_path=accounts_path,
        tamper_path=tamper_path,
        log_path=log_path,
        process=process,
    )
