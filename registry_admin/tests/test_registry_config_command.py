"""`manage.py registry_config`: its YAML and environment forms, proven on a real registry."""

import os
import shlex
import subprocess
import uuid
from io import StringIO

import pytest
import requests
import yaml
from django.core.management import CommandError, call_command

from registry_admin import htpasswd as htpasswd_module
from registry_admin.models import AuditEvent
from registry_admin.registry_config import dump_yaml, local_registry_config

from .harness import (
    NOTIFICATIONS_TOKEN,
    REGISTRY_BINARY,
    free_port,
    require_binary,
    stop_process,
    wait_for_port,
)
from .images import RegistryPusher, build_image, wait_for


def run_command(*args):
    out = StringIO()
    call_command("registry_config", *args, stdout=out)
    return out.getvalue()


def split_output(text):
    yaml_part, env_part = text.split("# Or as the registry's environment variables:\n")
    env = {}
    for line in env_part.strip().splitlines():
        [assignment] = shlex.split(line)
        name, _, value = assignment.partition("=")
        env[name] = value
    return yaml.safe_load(yaml_part), env


def test_it_prints_yaml_and_env_forms_with_the_token(settings):
    settings.NOTIFICATIONS_TOKEN = "tok-123"
    config, env = split_output(run_command("--url", "http://portal:8000/"))
    [endpoint] = config["notifications"]["endpoints"]
    assert endpoint["url"] == "http://portal:8000/api/registry/events"
    assert endpoint["headers"] == {"Authorization": ["Bearer tok-123"]}
    assert {"timeout", "threshold", "backoff"} <= set(endpoint)
    assert "ignore" not in endpoint
    assert config["notifications"]["events"] == {"includereferences": True}
    assert yaml.safe_load(env["REGISTRY_NOTIFICATIONS_ENDPOINTS"]) == [endpoint]
    assert env["REGISTRY_NOTIFICATIONS_EVENTCONFIG_INCLUDEREFERENCES"] == "true"


def test_it_adds_the_ignore_block_on_request(settings):
    config, _ = split_output(
        run_command("--url", "https://o.example", "--ignore-blobs", "--ignore-pulls")
    )
    assert config["notifications"]["endpoints"][0]["ignore"] == {
        "mediatypes": ["application/octet-stream"],
        "actions": ["pull"],
    }


def test_it_can_hide_the_token(settings):
    settings.NOTIFICATIONS_TOKEN = "tok-secret"
    text = run_command("--url", "https://o.example", "--hide-token")
    assert "tok-secret" not in text
    assert "Bearer <NOTIFICATIONS_TOKEN>" in text


def test_it_refuses_to_print_an_empty_token(settings):
    settings.NOTIFICATIONS_TOKEN = ""
    with pytest.raises(CommandError, match="NOTIFICATIONS_TOKEN"):
        run_command("--url", "https://o.example")


@pytest.mark.parametrize(
    "url",
    [
        "",
        "portal:8000",
        "ftp://x",
        "javascript:alert(1)",
        "http://a b",
        "http://<script>/",
        "http://x:0x50",
    ],
)
def test_it_refuses_bad_urls(url):
    with pytest.raises(CommandError, match="http|required"):
        run_command("--url", url)


def start_registry(tmp_path, env_extra=None, notifications=None):
    """A registry whose notifications come only from what the command printed."""
    require_binary(REGISTRY_BINARY, "install Debian's package: apt-get install docker-registry")
    htpasswd_path = tmp_path / "htpasswd"
    htpasswd_path.write_text(f"cfg:{htpasswd_module.hash_password('cfg-password-12345', 4)}\n")
    port = free_port()
    config = local_registry_config(
        listen=f"127.0.0.1:{port}",
        storage_root=tmp_path / "storage",
        htpasswd_path=htpasswd_path,
        portal_url="http://unused.invalid",
        token="unused",
    )
    del config["notifications"]
    if notifications:
        config["notifications"] = notifications
    config_path = tmp_path / "config.yml"
    config_path.write_text(dump_yaml(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(env_extra or {})
    log = open(tmp_path / "registry.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [REGISTRY_BINARY, "serve", str(config_path)], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    wait_for_port(port, process=process, log_path=tmp_path / "registry.log")
    return process, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("form", ["yaml", "env"])
@pytest.mark.django_db(transaction=True)
def test_a_real_registry_configured_by_the_output_delivers_events(
    form, live_server, tmp_path, settings
):
    settings.NOTIFICATIONS_TOKEN = NOTIFICATIONS_TOKEN
    config, env = split_output(run_command("--url", live_server.url, "--ignore-blobs"))
    if form == "yaml":
        process, url = start_registry(tmp_path, notifications=config["notifications"])
    else:
        process, url = start_registry(tmp_path, env_extra=env)
    try:
        repo = f"cfg-{form}-{uuid.uuid4().hex[:8]}"
        image = build_image()
        RegistryPusher(url, "cfg", "cfg-password-12345").push_image(repo, "v1", image)
        requests.get(
            f"{url}/v2/{repo}/blobs/{image.config_digest}",
            auth=("cfg", "cfg-password-12345"),
            timeout=5,
        )
        [push] = wait_for(
            lambda: list(AuditEvent.objects.filter(repository=repo, action="push")),
            message=f"the push event delivered through the {form} config",
        )
        assert (push.tag, push.actor, push.kind) == ("v1", "cfg", "manifest")
        # includereferences is on, and the ignore block kept every blob event away.
        assert '"references"' in push.raw
        assert not AuditEvent.objects.filter(repository=repo, kind="blob").exists()
    finally:
        stop_process(process)
