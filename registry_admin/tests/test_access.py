"""Every page needs a login and a role; admin-only actions refuse viewers."""

import pytest
from django.urls import reverse

PAGES = [
    "registry_admin:dashboard",
    "registry_admin:repositories",
    "registry_admin:users",
    "registry_admin:storage",
    "registry_admin:audit",
    "registry_admin:retention",
    "registry_admin:notification-settings",
    "registry_admin:access",
]


@pytest.mark.django_db
@pytest.mark.parametrize("name", PAGES)
def test_anonymous_requests_redirect_to_login(client, name):
    url = reverse(name)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert f"next={url}" in response["Location"]


@pytest.mark.django_db
def test_django_admin_needs_login(client):
    response = client.get("/django-admin/")
    assert response.status_code == 302


@pytest.mark.django_db
def test_unknown_path_is_a_plain_404(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert b"Log out" not in response.content


@pytest.mark.django_db
def test_healthz_answers_without_login(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_healthz_reports_503_when_the_database_fails(client, monkeypatch):
    from django.db import DatabaseError, connection

    def broken_cursor(*args, **kwargs):
        raise DatabaseError("database is locked")

    monkeypatch.setattr(connection, "cursor", broken_cursor)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


@pytest.mark.django_db
def test_healthz_refuses_post(client):
    assert client.post("/healthz").status_code == 405


@pytest.mark.django_db
def test_an_account_without_a_role_is_refused(client, roleless_user, settings):
    settings.REGISTRY_URL = "http://127.0.0.1:9"
    client.force_login(roleless_user)
    response = client.get(reverse("registry_admin:repositories"))
    assert response.status_code == 403
    assert b"no role" in response.content


@pytest.mark.django_db
def test_viewer_reads_pages(viewer_client):
    response = viewer_client.get(reverse("registry_admin:repositories"))
    assert response.status_code == 200


@pytest.mark.django_db
def test_logout_is_post_only_and_ends_the_session(admin_client):
    assert admin_client.get(reverse("logout")).status_code == 405
    response = admin_client.post(reverse("logout"))
    assert response.status_code == 302
    assert admin_client.get(reverse("registry_admin:users")).status_code == 302


@pytest.mark.django_db
def test_the_first_admin_manages_portal_accounts_in_django_admin(client, monkeypatch):
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    monkeypatch.setenv("PORTAL_ADMIN_PASSWORD", "first-admin-password")
    call_command("ensure_admin")
    client.force_login(get_user_model().objects.get(username="admin"))
    assert client.get("/django-admin/auth/user/").status_code == 200
    assert client.get("/django-admin/auth/group/").status_code == 200


@pytest.mark.django_db
def test_a_viewer_cannot_open_django_admin(viewer_client):
    response = viewer_client.get("/django-admin/auth/user/")
    assert response.status_code == 302
    assert "/django-admin/login/" in response["Location"]
