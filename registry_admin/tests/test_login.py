"""The login page, CSRF on it, and failed-login throttling (django-axes)."""

import pytest
from django.test import Client
from django.urls import reverse

from .factories import TEST_PASSWORD


@pytest.mark.django_db
def test_login_with_the_right_password_reaches_the_dashboard(client, admin_user, settings):
    settings.REGISTRY_URL = "http://127.0.0.1:9"
    response = client.post(
        reverse("login"), {"username": admin_user.username, "password": TEST_PASSWORD}, follow=True
    )
    assert response.status_code == 200
    assert response.resolver_match.view_name == "registry_admin:dashboard"


@pytest.mark.django_db
def test_wrong_password_shows_an_error_not_the_password(client, admin_user):
    response = client.post(
        reverse("login"), {"username": admin_user.username, "password": "wrong<script>"}
    )
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    assert b"wrong<script>" not in response.content


@pytest.mark.django_db
def test_login_requires_csrf(admin_user):
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        reverse("login"), {"username": admin_user.username, "password": TEST_PASSWORD}
    )
    assert response.status_code == 403


@pytest.mark.django_db
def test_repeated_failures_lock_the_account_even_with_the_right_password(
    client, admin_user, settings
):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("login"), {"username": admin_user.username, "password": "nope"})
    response = client.post(
        reverse("login"), {"username": admin_user.username, "password": TEST_PASSWORD}
    )
    assert response.status_code == 429
    assert b"Too many failed logins" in response.content
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
@pytest.mark.parametrize(
    "username",
    ["x" * 5000, "admin' OR '1'='1", "<script>alert(1)</script>", "../../etc/passwd", "ünï\u0000"],
)
def test_hostile_usernames_are_refused_cleanly(client, username):
    response = client.post(reverse("login"), {"username": username, "password": "p"})
    assert response.status_code in (200, 429)
    assert b"<script>alert(1)</script>" not in response.content


@pytest.mark.django_db
def test_login_page_has_labelled_fields(client):
    content = client.get(reverse("login")).content.decode()
    assert '<label for="id_username">' in content
    assert '<label for="id_password">' in content
    assert "<title>Log in · Oyster</title>" in content


def test_the_throttling_name_is_cut_and_printable():
    from django.test import RequestFactory

    from registry_admin.accounts import throttling_username

    request = RequestFactory().post("/login/", {"username": "a\x00b" + "x" * 500})
    name = throttling_username(request)
    assert name.startswith("ab") and len(name) == 150
    assert throttling_username(request, {"username": "bob"}) == "bob"
