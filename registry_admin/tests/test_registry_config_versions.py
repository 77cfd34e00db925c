"""`registry_config` / `local_registry_config --registry-version 2|3`: what each version needs.

The 3.x expectations (credentials.type, config path, env nesting) are recorded from the upstream
source in distribution3/README.md; no 3.x binary can run here. The 2.8 side runs on Debian's
real `docker-registry`.
"""

import os
import shlex
import subprocess
from io import StringIO

import pytest
import yaml
from django.core.management import CommandError, call_command

from registry_admin import registry_config

from .harness import REGISTRY_BINARY, require_binary

KEY = "c2VjcmV0LXN0b3JhZ2Uta2V5LXRoYXQtbXVzdC1uZXZlci1iZS1wcmludGVk"


@pytest.fixture
def azure(settings):
    settings.NOTIFICATIONS_TOKEN = "tok-0123456789abcdef"
    settings.STORAGE_BACKEND = "azure"
    settings.AZURE_STORAGE_ACCOUNT_NAME = "oysterstore"
    settings.AZURE_STORAGE_CONTAINER = "registry"
    settings.AZURE_STORAGE_ROOT_DIRECTORY = ""
    settings.AZURE_STORAGE_ACCOUNT_URL = ""
    settings.AZURE_STORAGE_ACCOUNT_KEY = KEY
    settings.AZURE_STORAGE_CONNECTION_STRING = ""
    settings.AZURE_STORAGE_CREDENTIAL = ""
    return settings


def run(*args):
    out, err = StringIO(), StringIO()
    call_command(
        "registry_config", "--url", "https://portal.example", *args, stdout=out, stderr=err
    )
    text = out.getvalue()
    assert KEY not in text and KEY not in err.getvalue()
    yaml_part, env_part = text.split("# Or as the registry's environment variables:\n")
    env = dict(shlex.split(line)[0].split("=", 1) for line in env_part.strip().splitlines())
    return text, yaml.safe_load(yaml_part), env


def nest(env):
    """The registry's own env rule (configuration/parser.go, overwriteMap at v3.1.1 and the
    same code in v2.8.2): each `_` below REGISTRY_ is one level, map keys lowercased."""
    tree = {}
    for name, value in env.items():
        if not name.startswith("REGISTRY_STORAGE_"):
            continue
        *parents, leaf = name.removeprefix("REGISTRY_").lower().split("_")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def test_version_3_with_a_managed_identity_needs_credentials_type_and_no_key(azure):
    text, config, env = run("--registry-version", "3")
    assert text.splitlines()[0].startswith("# Registry 3 reads /etc/distribution/config.yml")
    assert config["storage"] == {
        "azure": {
            "accountname": "oysterstore",
            "container": "registry",
            "credentials": {"type": "default_credentials"},
        }
    }
    assert env["REGISTRY_STORAGE"] == "azure"
    assert env["REGISTRY_STORAGE_AZURE_CREDENTIALS_TYPE"] == "default_credentials"
    assert "REGISTRY_STORAGE_AZURE_ACCOUNTKEY" not in env
    # The env form nests to exactly the YAML form under the registry's parsing rule.
    assert nest(env)["storage"] == config["storage"]
    assert env["REGISTRY_NOTIFICATIONS_EVENTCONFIG_INCLUDEREFERENCES"] == "true"


def test_version_3_shared_key_and_a_service_url_print_a_placeholder_for_the_key(azure):
    azure.AZURE_STORAGE_ACCOUNT_URL = "https://azurite.example:10000/oysterstore"
    azure.AZURE_STORAGE_ROOT_DIRECTORY = "/reg/"
    _, config, env = run("--registry-version", "3", "--azure-credentials", "shared_key")
    section = config["storage"]["azure"]
    assert section["credentials"] == {"type": "shared_key"}
    assert section["accountkey"] == registry_config.ACCOUNT_KEY_PLACEHOLDER
    assert section["serviceurl"] == "https://azurite.example:10000/oysterstore"
    assert section["rootdirectory"] == "reg"
    assert nest(env)["storage"] == config["storage"]


def test_version_2_has_no_credentials_type_and_keeps_its_config_path(azure):
    azure.AZURE_STORAGE_ACCOUNT_URL = "https://azurite.example:10000/oysterstore"
    err = StringIO()
    out = StringIO()
    call_command("registry_config", "--url", "https://portal.example", stdout=out, stderr=err)
    assert out.getvalue().startswith("# Registry 2 reads /etc/docker/registry/config.yml")
    assert "cannot use AZURE_STORAGE_ACCOUNT_URL" in err.getvalue()
    _, config, env = run()
    assert config["storage"]["azure"] == {
        "accountname": "oysterstore",
        "container": "registry",
        "accountkey": registry_config.ACCOUNT_KEY_PLACEHOLDER,
    }
    assert "REGISTRY_STORAGE_AZURE_CREDENTIALS_TYPE" not in env


def test_filesystem_storage_prints_notifications_only(settings):
    settings.NOTIFICATIONS_TOKEN = "tok-0123456789abcdef"
    settings.STORAGE_BACKEND = "filesystem"
    for version in ("2", "3"):
        _, config, env = run("--registry-version", version)
        assert set(config) == {"notifications"}
        assert all(name.startswith("REGISTRY_NOTIFICATIONS_") for name in env)


@pytest.mark.parametrize(
    "args",
    [
        ["--registry-version", "4"],
        ["--registry-version", "2.8"],
        ["--registry-version", "9" * 400],
        ["--registry-version", "3\x00"],
        ["--azure-credentials", "default"],  # the upstream doc's example; the code refuses it
        ["--azure-credentials", "x" * 5000],
    ],
)
def test_unknown_versions_and_credential_types_are_refused(azure, args):
    with pytest.raises(CommandError):
        call_command("registry_config", "--url", "https://portal.example", *args, stdout=StringIO())


def test_azure_without_account_or_container_is_a_clear_error(azure):
    azure.AZURE_STORAGE_CONTAINER = ""
    with pytest.raises(CommandError, match="AZURE_STORAGE_CONTAINER"):
        run("--registry-version", "3")


def test_the_library_refuses_unknown_versions():
    with pytest.raises(ValueError, match="2 or 3"):
        registry_config.azure_storage_section(4, "a", "c")
    with pytest.raises(ValueError, match="credentials type"):
        registry_config.azure_storage_section(3, "a", "c", credentials_type="default")
    with pytest.raises(ValueError):
        registry_config.local_registry_config("127.0.0.1:1", "/x", "/y", "http://p", "t", version=1)


@pytest.mark.parametrize("version", ["2", "3"])
def test_local_registry_config_writes_each_version(settings, tmp_path, version):
    settings.NOTIFICATIONS_TOKEN = "tok-0123456789abcdef"
    settings.STORAGE_FILESYSTEM_ROOT = str(tmp_path / "storage")
    out = tmp_path / "config.yml"
    call_command(
        "local_registry_config", "--out", str(out), "--registry-version", version, stdout=StringIO()
    )
    text = out.read_text()
    path = registry_config.CONFIG_PATHS[int(version)]
    assert text.splitlines()[0] == (
        f"# For registry {version}: `registry serve {out}` (its image's default path is {path})."
    )
    config = yaml.safe_load(text)
    assert config["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "storage")
    assert config["storage"]["delete"] == {"enabled": True}
    with pytest.raises(CommandError):
        call_command(
            "local_registry_config", "--out", str(out), "--registry-version", "5", stdout=StringIO()
        )


@pytest.mark.live
@pytest.mark.parametrize("version", ["2", "3"])
def test_the_env_names_parse_on_the_real_2_8_binary(azure, tmp_path, version):
    """2.8's parser has the same map rule: it must not ignore any printed name. Debian's build
    has no azure driver, so reaching that panic proves the storage variables were read."""
    require_binary(REGISTRY_BINARY, "install Debian's package: apt-get install docker-registry")
    _, _, env = run("--registry-version", version)
    config = tmp_path / "config.yml"
    config.write_text("version: 0.1\nhttp:\n  addr: 127.0.0.1:0\nstorage:\n  inmemory: {}\n")
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    child_env.update(env)
    result = subprocess.run(
        [REGISTRY_BINARY, "serve", str(config)],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    log = result.stdout + result.stderr
    assert "Ignoring unrecognized environment variable" not in log
    assert "StorageDriver not registered: azure" in log
