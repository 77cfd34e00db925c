"""docker-compose.token.yml on this machine: Debian's registry with the registry environment the
token variant gives it, the certificate the portal's start sequence writes, and a token the
portal signs. No Docker engine here, so the services run as local processes (as in
test_shipping.py)."""

import re

import pytest
import requests
import yaml

from registry_admin import tokens
from registry_admin.registry import parse_bearer_challenge
from registry_admin.tests.harness import free_port, stop_process
from registry_admin.tests.images import wait_for

from .test_shipping import (
    COMPOSE,
    REPO,
    SAMPLE_DOTENV,
    base_env,
    manage,
    service_env,
    start_registry_with,
)

COMPOSE_TOKEN = REPO / "docker-compose.token.yml"


class _Override(dict):
    """Compose's `!override`: this mapping replaces the base file's instead of merging."""


class _ComposeLoader(yaml.SafeLoader):
    pass


_ComposeLoader.add_constructor(
    "!override", lambda loader, node: _Override(loader.construct_mapping(node, deep=True))
)


def merged_compose():
    base = yaml.safe_load(COMPOSE.read_text())
    override = yaml.load(COMPOSE_TOKEN.read_text(), Loader=_ComposeLoader)  # noqa: S506
    services = base["services"]
    for name, service in override["services"].items():
        target = services[name]
        for key, value in service.items():
            if isinstance(value, _Override):
                target[key] = dict(value)
            elif key == "environment":
                target[key] = {**target.get(key, {}), **value}
            elif key == "volumes":
                target[key] = [*target.get(key, []), *value]
            else:
                target[key] = value
    base["volumes"].update(override.get("volumes") or {})
    return base


def test_token_variant_documents_its_variables():
    text = COMPOSE_TOKEN.read_text()
    names = set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", text))
    example = (REPO / ".env.example").read_text()
    missing = {n for n in names if not re.search(rf"^{n}=", example, re.MULTILINE)}
    assert not missing


@pytest.mark.django_db
@pytest.mark.live
def test_registry_in_the_token_variant_trusts_the_portals_tokens(tmp_path, settings):
    compose = merged_compose()
    services = compose["services"]
    registry_env = service_env(services["registry"], SAMPLE_DOTENV)
    assert not any(k.startswith("REGISTRY_AUTH_HTPASSWD") for k in registry_env)
    assert "token-cert:/token-cert:ro" in services["registry"]["volumes"]
    assert "token-cert:/token-cert" in services["portal"]["volumes"]

    # The portal's start sequence (docker/entrypoint.sh `prepare`) writes the bundle.
    portal_env = service_env(services["portal"], SAMPLE_DOTENV)
    data_dir, cert_dir = tmp_path / "portal-data", tmp_path / "token-cert"
    data_dir.mkdir()
    container_cert = portal_env["TOKEN_CERT_OUT"]
    portal_env.update(DATA_DIR=data_dir, TOKEN_CERT_OUT=cert_dir / "root.pem")
    entrypoint = (REPO / "docker" / "entrypoint.sh").read_text()
    assert '--auth token --url "${TOKEN_REALM_URL:-http://localhost:8000}"' in entrypoint
    result = manage(
        [
            "registry_config",
            "--auth",
            "token",
            "--url",
            portal_env["TOKEN_REALM_URL"],
            "--hide-token",
            "--cert-out",
            str(cert_dir / "root.pem"),
        ],
        base_env(**portal_env),
    )
    assert result.returncode == 0, result.stderr
    assert f"REGISTRY_AUTH_TOKEN_REALM={registry_env['REGISTRY_AUTH_TOKEN_REALM']}" in result.stdout
    assert registry_env["REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE"] == container_cert
    assert not (cert_dir / tokens.KEY_FILE).exists()  # the key stays in the portal's data

    env = dict(registry_env)
    env["REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE"] = str(cert_dir / "root.pem")
    env["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"] = str(tmp_path / "storage")
    port = free_port()
    env["REGISTRY_HTTP_ADDR"] = f"127.0.0.1:{port}"
    process, log_path = start_registry_with(env, tmp_path)
    url = f"http://127.0.0.1:{port}/v2/"
    try:

        def answers():
            if process.poll() is not None:
                raise AssertionError(log_path.read_text()[-3000:])
            try:
                return requests.get(url, timeout=1).status_code == 401
            except requests.ConnectionError:
                return False

        wait_for(answers, timeout=15, message="the registry to answer /v2/")
        assert "Ignoring unrecognized environment variable" not in log_path.read_text()
        challenge = parse_bearer_challenge(requests.get(url, timeout=5).headers["WWW-Authenticate"])
        assert challenge["realm"] == "http://localhost:8000/auth/token"
        assert challenge["service"] == "oyster-registry"

        # A token from the portal's key (same TOKEN_KEY_DIR default under DATA_DIR) is accepted.
        settings.TOKEN_KEY_DIR = str(data_dir / "token")
        settings.TOKEN_SERVICE, settings.TOKEN_ISSUER = "oyster-registry", "oyster"
        signed, _ = tokens.issue("someone", [], "oyster-registry")
        bearer = {"Authorization": f"Bearer {signed}"}
        assert requests.get(url, headers=bearer, timeout=5).status_code == 200
    finally:
        stop_process(process)


def test_azure_guide_token_settings_are_what_registry_config_prints(tmp_path):
    guide = (REPO / "docs" / "azure-app-service.md").read_text()
    block = guide.split("## Token auth", 1)[1].split("```shell\n", 1)[1].split("```", 1)[0]
    block = block.replace("\\\n", " ").replace('"$portal_app"', "oyster-portal")
    block = block.replace("$portal_app", "oyster-portal")
    given = dict(re.findall(r"\b(REGISTRY_AUTH(?:_TOKEN_[A-Z]+)?)=\"?([^\s\"]+)", block))
    portal = dict(re.findall(r"\b((?:TOKEN|REGISTRY_AUTH_MODE)[A-Z_]*)=\"?([^\s\"]+)", block))
    assert portal["REGISTRY_AUTH_MODE"] == "token"
    env = base_env(
        DATA_DIR=tmp_path, SECRET_KEY="x" * 50, TOKEN_KEY_DIR=tmp_path / "keys", DEBUG="1"
    )
    cert_out = tmp_path / "token-root.pem"
    result = manage(
        [
            "registry_config",
            "--auth",
            "token",
            "--url",
            portal["TOKEN_REALM_URL"],
            "--hide-token",
            "--cert-out",
            str(cert_out),
            "--cert-path",
            portal["TOKEN_CERT_OUT"],
        ],
        env,
    )
    assert result.returncode == 0, result.stderr
    printed = dict(re.findall(r"^(REGISTRY_AUTH(?:_TOKEN_[A-Z]+)?)=(\S+)$", result.stdout, re.M))
    assert given == printed
    assert cert_out.read_text().startswith("-----BEGIN CERTIFICATE-----")
