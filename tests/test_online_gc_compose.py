"""docker-compose.online-gc.yml: write access to the registry's storage for the online collector.

Merged the way `docker compose -f -f` merges it (mounts by container path) and checked against
the portal's own settings. tests/test_container.py runs the same override for real (podman).
"""

from types import SimpleNamespace

import pytest
import yaml

from registry_admin.storage import backends
from tests.test_shipping import (
    AZURE_GUIDE,
    COMPOSE,
    REGISTRY_IMAGE_CONFIG,
    REGISTRY_IMAGE_STORAGE_ROOT,
    REPO,
    SAMPLE_DOTENV,
    _mount,
    base_env,
    load_compose,
    portal_settings,
    service_env,
)

COMPOSE_ONLINE_GC = REPO / "docker-compose.online-gc.yml"


@pytest.fixture(scope="module")
def merged():
    return load_compose(COMPOSE, COMPOSE_ONLINE_GC)


def test_only_the_worker_gets_the_registry_storage_read_write(merged):
    services = merged["services"]
    registry_volume, registry_read_only = _mount(services["registry"], REGISTRY_IMAGE_STORAGE_ROOT)
    worker_volume, worker_read_only = _mount(services["worker"], REGISTRY_IMAGE_STORAGE_ROOT)
    portal_volume, portal_read_only = _mount(services["portal"], REGISTRY_IMAGE_STORAGE_ROOT)
    assert registry_volume == worker_volume == portal_volume
    assert not worker_read_only and portal_read_only and not registry_read_only
    # The worker's other mounts survive the override, once each.
    base_worker = load_compose(COMPOSE)["services"]["worker"]
    assert sorted(s.split(":")[1] for s in services["worker"]["volumes"]) == sorted(
        s.split(":")[1] for s in base_worker["volumes"]
    )
    # The web portal keeps the image's uid 10001 and every capability setting of the base file.
    assert "user" not in services["portal"] and "cap_add" not in services["portal"]


def test_the_worker_runs_as_root_with_only_the_capabilities_it_needs(merged):
    worker = merged["services"]["worker"]
    assert worker["user"] == "0"
    assert worker["cap_drop"] == ["ALL"]
    assert sorted(worker["cap_add"]) == ["CHOWN", "DAC_OVERRIDE"]


def test_the_blob_cache_oyster_assumes_is_the_one_the_registry_uses(merged):
    services = merged["services"]
    image_cache = yaml.safe_load(REGISTRY_IMAGE_CONFIG)["storage"]["cache"]["blobdescriptor"]
    registry_cache = services["registry"]["environment"]["REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR"]
    assert registry_cache == image_cache == "inmemory"
    for name in ("portal", "worker"):
        env = service_env(services[name], SAMPLE_DOTENV)
        computed = portal_settings(
            base_env(**env), "REGISTRY_BLOB_CACHE", "REGISTRY_INSTANCES", "STORAGE_FILESYSTEM_ROOT"
        )
        assert computed == {
            "REGISTRY_BLOB_CACHE": registry_cache,
            "REGISTRY_INSTANCES": 1,
            "STORAGE_FILESYSTEM_ROOT": REGISTRY_IMAGE_STORAGE_ROOT,
        }


def test_without_the_override_the_default_cache_matches_the_image_too():
    env = service_env(load_compose(COMPOSE)["services"]["worker"], SAMPLE_DOTENV)
    example = (REPO / ".env.example").read_text()
    assert "\nREGISTRY_BLOB_CACHE=inmemory\n" in example
    computed = portal_settings(base_env(**env), "REGISTRY_BLOB_CACHE")
    assert computed["REGISTRY_BLOB_CACHE"] == "inmemory"


def test_the_override_the_readme_the_azure_guide_and_the_message_agree():
    text = COMPOSE_ONLINE_GC.read_text()
    assert "docker compose -f docker-compose.yml -f docker-compose.online-gc.yml up -d" in text
    # The sentence a run without write access ends with, as the override quotes it.
    assert backends._WRITE_ACCESS in text
    readme = (REPO / "README.md").read_text()
    assert "docker-compose.online-gc.yml" in readme
    assert "#letting-the-online-collector-write" in readme
    guide = AZURE_GUIDE.read_text()
    assert "## Letting the online collector write" in guide
    assert '--role "Storage Blob Data Contributor"' in guide
    # The guide quotes, word for word, what the Storage page shows for a missing role.
    container = "registry"
    location = f"https://<storage>.blob.core.windows.net/{container}"
    refused = SimpleNamespace(
        container=container,
        location=location,
        credential_kind="default",
        _where=lambda: f"container {container!r} at {location}",
    )
    message = backends.AzureStorage._refusal(
        refused, "AuthorizationPermissionMismatch", 403, "write"
    )
    assert f"\n{message}\n" in guide
    assert "docker-compose.online-gc.yml" in (REPO / "CHANGELOG.md").read_text()
