"""CLI secrets for docker login (token mode): the profile page, the token endpoint taking a
secret, revoking, expiry, a disabled account, directory groups as @group subjects. The push
through the real registry with skopeo is in test_token_registry.py."""

import base64
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from registry_admin import access, cli_secrets, directory, htpasswd
from registry_admin.models import AuditEvent, CliSecret, DirectoryIdentity, PortalAction

ISSUER = "https://login.example.org"
MAP = {"oyster-admins": "admin", "oyster-readers": "viewer"}


@pytest.fixture
def token_mode(settings, tmp_path):
    settings.REGISTRY_AUTH_MODE = "token"
    settings.TOKEN_KEY_DIR = str(tmp_path / "keys")
    settings.HTPASSWD_PATH = str(tmp_path / "htpasswd")
    settings.OIDC_ROLE_MAP = MAP
    return settings


@pytest.fixture
def dana(token_mode):
    return directory.sign_in(
        ISSUER,
        {
            "sub": "d-1",
            "preferred_username": "Dana@Example.org",
            "groups": ["oyster-readers", "team-devs"],
        },
        via="oidc",
    )


@pytest.fixture
def dana_client(dana):
    client = Client()
    client.force_login(dana)
    return client


def token(username, password, scope="repository:team/app:pull,push"):
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    return Client().get(
        reverse("registry_admin:token"),
        {"service": "oyster-registry", "scope": scope},
        headers={"Authorization": f"Basic {credentials}"},
    )


def granted(response):
    import jwt

    claims = jwt.decode(response.json()["token"], options={"verify_signature": False})
    return {entry["name"]: sorted(entry["actions"]) for entry in claims["access"]}


@pytest.mark.parametrize(
    ("username", "expected"),
    [
        ("dana@example.org", "dana.example.org"),
        ("Dana.Smith@Example.ORG", "dana.smith.example.org"),
        ("ünï code", "n-code"),
        ("robot-x", ""),
        ("@@@", ""),
        ("a" * 200, "a" * 64),
    ],
)
def test_registry_names_follow_the_registrys_grammar(username, expected):
    assert cli_secrets.registry_name_for(username) == expected


@pytest.mark.django_db
def test_a_secret_is_shown_once_hashed_and_works_for_the_group(dana_client, dana, token_mode):
    access.grant("admin", "@team-devs", "team/*", ["pull", "push"])
    response = dana_client.post(
        reverse("registry_admin:profile-secret-create"), {"name": "laptop", "days": "30"}
    )
    assert response.status_code == 200
    secret = response.context["new_secret"]
    assert secret.startswith("oyc_") and secret in response.content.decode()
    row = CliSecret.objects.get()
    assert secret not in row.secret_hash and len(row.secret_hash) == 64
    identity = DirectoryIdentity.objects.get(user=dana)
    assert identity.registry_name == "dana.example.org"
    # Shown once: the page does not show it again.
    assert secret not in dana_client.get(reverse("registry_admin:profile")).content.decode()
    answer = token("dana.example.org", secret)
    assert answer.status_code == 200
    assert granted(answer) == {"team/app": ["pull", "push"]}
    # The secret belongs to that name only.
    assert token("someone-else", secret).status_code == 401
    assert AuditEvent.objects.filter(action=PortalAction.CLI_SECRET_CREATED).count() == 1
    assert secret not in "".join(AuditEvent.objects.values_list("raw", flat=True))


@pytest.mark.django_db
def test_revoked_expired_disabled_and_group_lost_stop_the_secret(dana_client, dana, token_mode):
    access.grant("admin", "@team-devs", "team/*", ["pull", "push"])
    _row, secret = cli_secrets.create(DirectoryIdentity.objects.get(user=dana), "laptop", 30)
    _row2, other = cli_secrets.create(DirectoryIdentity.objects.get(user=dana), "ci", 30)
    assert token("dana.example.org", secret).status_code == 200
    # The group lost in the directory, read at the next sign-in: no push any more.
    directory.sign_in(ISSUER, {"sub": "d-1", "groups": ["oyster-readers"]}, via="oidc")
    assert granted(token("dana.example.org", secret)) == {}
    directory.sign_in(ISSUER, {"sub": "d-1", "groups": ["oyster-readers", "team-devs"]}, via="oidc")
    response = dana_client.post(
        reverse("registry_admin:profile-secret-revoke"), {"secret": _row.pk}
    )
    assert response.status_code == 302
    assert token("dana.example.org", secret).status_code == 401
    assert token("dana.example.org", other).status_code == 200
    CliSecret.objects.filter(pk=_row2.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert token("dana.example.org", other).status_code == 401
    _row3, third = cli_secrets.create(DirectoryIdentity.objects.get(user=dana), "desk", 1)
    dana.is_active = False
    dana.save()
    assert token("dana.example.org", third).status_code == 401


@pytest.mark.django_db
def test_a_name_the_registry_has_already_is_refused(dana_client, token_mode):
    htpasswd.add_user("dana.example.org", "a-long-enough-password", rounds=4)
    response = dana_client.post(
        reverse("registry_admin:profile-secret-create"), {"name": "laptop", "days": "30"}
    )
    assert response.status_code == 400
    assert "already has a user named dana.example.org" in response.content.decode()
    assert not CliSecret.objects.exists()


@pytest.mark.django_db
def test_directory_admins_group_is_not_the_registrys_admins(token_mode):
    user = directory.sign_in(
        ISSUER,
        {"sub": "e", "preferred_username": "eve", "groups": ["oyster-readers", "admins"]},
        via="oidc",
    )
    _row, secret = cli_secrets.create(DirectoryIdentity.objects.get(user=user), "x", 1)
    assert granted(token("eve", secret)) == {}


@pytest.mark.django_db
def test_someone_elses_secret_cannot_be_revoked(dana, token_mode, viewer_client):
    row, secret = cli_secrets.create(DirectoryIdentity.objects.get(user=dana), "laptop", 30)
    viewer_client.post(reverse("registry_admin:profile-secret-revoke"), {"secret": row.pk})
    assert CliSecret.objects.get().revoked_at is None
    assert token("dana.example.org", secret).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    "data",
    [
        {},
        {"name": "", "days": "30"},
        {"name": "x" * 5000, "days": "30"},
        {"name": "<script>alert(1)</script>", "days": "0"},
        {"name": "laptop", "days": "366"},
        {"name": "laptop", "days": "1e9"},
        {"name": "a\x00b", "days": "-1"},
    ],
)
def test_hostile_secret_forms_are_refused(dana_client, token_mode, data):
    response = dana_client.post(reverse("registry_admin:profile-secret-create"), data)
    assert response.status_code == 400
    assert b"<script>alert(1)</script>" not in response.content
    assert not CliSecret.objects.exists()


@pytest.mark.django_db
def test_the_profile_needs_login_and_csrf(dana, token_mode):
    assert Client().get(reverse("registry_admin:profile")).status_code == 302
    client = Client(enforce_csrf_checks=True)
    client.force_login(dana)
    assert (
        client.post(
            reverse("registry_admin:profile-secret-create"), {"name": "a", "days": "1"}
        ).status_code
        == 403
    )
    assert client.get(reverse("registry_admin:profile-secret-create")).status_code == 405


@pytest.mark.django_db
def test_local_accounts_and_htpasswd_mode_get_no_secrets(
    admin_client, dana_client, settings, token_mode
):
    response = admin_client.post(
        reverse("registry_admin:profile-secret-create"), {"name": "a", "days": "1"}
    )
    assert response.status_code == 302 and not CliSecret.objects.exists()
    settings.REGISTRY_AUTH_MODE = "htpasswd"
    dana_client.post(reverse("registry_admin:profile-secret-create"), {"name": "a", "days": "1"})
    assert not CliSecret.objects.exists()


@pytest.mark.django_db
def test_wrong_and_hostile_secrets_are_counted_failures(dana, token_mode):
    cli_secrets.create(DirectoryIdentity.objects.get(user=dana), "laptop", 30)
    for password in ("oyc_wrong", "oyc_" + "x" * 5000, "", "\x00"):
        assert token("dana.example.org", password).status_code in (400, 401, 429)
    # Names the registry cannot have never reach the database (PostgreSQL refuses a NUL).
    for username in ("dana\x00", "x" * 500, "<script>", "dana example"):
        assert token(username, "oyc_" + "a" * 43).status_code == 401
