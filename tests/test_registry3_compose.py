"""docker-compose.registry3.yml: the documented registry:3 variant of the compose setup.

No Docker engine runs on the test machines: the override is merged the way `docker compose -f
-f` merges it and checked against the portal's own view of 3.x (registry_config, the upgrade
check), whose 3.x rules are recorded from distribution's source
(registry_admin/tests/distribution3/README.md).
"""

import re

import pytest

from registry_admin import registry_config, upgrade
from tests.test_shipping import COMPOSE, REPO, SAMPLE_DOTENV, load_compose, service_env

COMPOSE_REGISTRY3 = REPO / "docker-compose.registry3.yml"


@pytest.fixture(scope="module")
def merged():
    return load_compose(COMPOSE, COMPOSE_REGISTRY3)


def test_the_override_pins_a_registry_3_image_and_changes_nothing_else(merged):
    base = load_compose(COMPOSE)["services"]
    registry = merged["services"]["registry"]
    assert re.fullmatch(r"registry:3\.\d+\.\d+", registry["image"])
    assert registry["environment"] == base["registry"]["environment"]
    assert {k: v for k, v in registry.items() if k != "image"} == {
        k: v for k, v in base["registry"].items() if k != "image"
    }
    assert merged["services"]["portal"] == base["portal"]


def test_its_notifications_are_what_registry_config_prints_for_version_3(merged):
    env = service_env(merged["services"]["registry"], SAMPLE_DOTENV)
    endpoint = registry_config.notification_endpoint(
        "http://portal:8000", SAMPLE_DOTENV["NOTIFICATIONS_TOKEN"]
    )
    _, env_text = registry_config.registry_config_texts(
        "http://portal:8000", SAMPLE_DOTENV["NOTIFICATIONS_TOKEN"], version=3
    )
    assert env["REGISTRY_NOTIFICATIONS_ENDPOINTS"] == registry_config.endpoints_env_value(endpoint)
    assert "REGISTRY_NOTIFICATIONS_EVENTCONFIG_INCLUDEREFERENCES=true" in env_text


def test_nothing_in_its_environment_breaks_on_3(merged, settings):
    settings.STORAGE_BACKEND = "filesystem"
    env = service_env(merged["services"]["registry"], SAMPLE_DOTENV)
    findings = upgrade.run_checks(environ=env, include_storage=False)
    assert [f for f in findings if f.level == upgrade.BREAKS] == []
    # Deletes stay on, so the 3.0.x untag-despite-disabled finding does not apply.
    assert "deletes" not in {f.topic for f in findings}


def test_the_override_and_the_readme_point_at_each_other():
    text = COMPOSE_REGISTRY3.read_text()
    assert "docker compose -f docker-compose.yml -f docker-compose.registry3.yml" in text
    assert "check_registry_upgrade" in text
    assert "docker-compose.registry3.yml" in (REPO / "README.md").read_text()
