"""The dashboard pings the real registry and reports its state, never a 500."""

import time

import pytest
from django.urls import reverse

from .harness import free_port


@pytest.mark.django_db(transaction=True)
def test_reports_reachable_with_the_api_version(admin_client, registry):
    response = admin_client.get(reverse("registry_admin:dashboard"))
    assert response.status_code == 200
    content = response.content.decode()
    assert 'data-state="reachable"' in content
    assert "Docker-Distribution-API-Version: registry/2.0" in content


@pytest.mark.django_db(transaction=True)
def test_reports_credentials_rejected(admin_client, registry, settings):
    settings.REGISTRY_PASSWORD = "not-the-password"
    response = admin_client.get(reverse("registry_admin:dashboard"))
    assert response.status_code == 200
    assert 'data-state="unauthorized"' in response.content.decode()
    assert "not-the-password" not in response.content.decode()


@pytest.mark.django_db
def test_reports_unreachable_for_a_closed_port(admin_client, settings):
    settings.REGISTRY_URL = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    response = admin_client.get(reverse("registry_admin:dashboard"))
    assert time.monotonic() - started < settings.REGISTRY_TIMEOUT
    assert response.status_code == 200
    content = response.content.decode()
    assert 'data-state="unreachable"' in content
    assert "connection refused" in content


@pytest.mark.django_db
def test_reports_unreachable_within_the_timeout_for_a_silent_port(
    admin_client, settings, silent_port
):
    settings.REGISTRY_URL = f"http://127.0.0.1:{silent_port}"
    settings.REGISTRY_TIMEOUT = 2.0
    started = time.monotonic()
    response = admin_client.get(reverse("registry_admin:dashboard"))
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert 'data-state="unreachable"' in response.content.decode()
    assert "did not answer within 2 seconds" in response.content.decode()
    # One timeout, not one per attempt or per card: room for a loaded machine, not for a second.
    assert elapsed < 2 * settings.REGISTRY_TIMEOUT - 0.1


@pytest.mark.django_db
def test_reports_unreachable_for_an_unresolvable_host(admin_client, settings):
    settings.REGISTRY_URL = "http://registry.invalid"
    response = admin_client.get(reverse("registry_admin:dashboard"))
    assert response.status_code == 200
    assert 'data-state="unreachable"' in response.content.decode()
