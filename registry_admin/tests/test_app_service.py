"""App Service authentication: X-MS-CLIENT-PRINCIPAL as App Service's front end sends it,
believed only with APP_SERVICE_AUTH on and from behind PROXY_COUNT proxies; forged, garbage and
oversized headers are as if absent."""

import base64
import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from registry_admin.models import AuditEvent, DirectoryIdentity, PortalAction

MAP = {"oyster-admins": "admin", "oyster-readers": "viewer"}
OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"


def principal(oid="0f1e-dana", name="dana@example.org", groups=("oyster-admins",), **extra):
    claims = [
        {"typ": OID, "val": oid},
        {"typ": "preferred_username", "val": name},
        {"typ": "name", "val": "Dana"},
        *({"typ": "groups", "val": g} for g in groups),
    ]
    document = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}
    return base64.b64encode(json.dumps(document | extra).encode()).decode()


def through_front_end(value, forwarded="203.0.113.9:52311"):
    headers = {"X-MS-CLIENT-PRINCIPAL": value}
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    return headers


@pytest.fixture
def easy_auth(settings):
    settings.APP_SERVICE_AUTH = True
    settings.PROXY_COUNT = 1
    settings.OIDC_ROLE_MAP = MAP
    settings.OIDC_ROLE_CLAIM = "groups"
    settings.REGISTRY_URL = "http://127.0.0.1:9"
    return settings


def audit(action):
    return AuditEvent.objects.filter(action=action).count()


@pytest.mark.django_db
def test_the_front_ends_principal_signs_in_once_per_session(client, easy_auth):
    response = client.get(reverse("registry_admin:audit"), headers=through_front_end(principal()))
    assert response.status_code == 200
    user = get_user_model().objects.get(username="dana@example.org")
    assert list(user.groups.values_list("name", flat=True)) == ["admin"]
    identity = DirectoryIdentity.objects.get(user=user)
    assert (identity.issuer, identity.subject) == ("app-service:aad", "0f1e-dana")
    for _ in range(3):
        assert (
            client.get(
                reverse("registry_admin:audit"), headers=through_front_end(principal())
            ).status_code
            == 200
        )
    assert audit(PortalAction.SIGNED_IN) == 1


@pytest.mark.django_db
def test_a_changed_group_changes_the_role_and_no_group_refuses_once(client, easy_auth):
    client.get(reverse("registry_admin:audit"), headers=through_front_end(principal()))
    response = client.get(
        reverse("registry_admin:audit"),
        headers=through_front_end(principal(groups=["oyster-readers", "staff"])),
    )
    assert response.status_code == 200
    user = get_user_model().objects.get(username="dana@example.org")
    assert list(user.groups.values_list("name", flat=True)) == ["viewer"]
    for _ in range(3):
        response = client.get(
            reverse("registry_admin:audit"), headers=through_front_end(principal(groups=["staff"]))
        )
        assert response.status_code == 403
        assert "none of the groups" in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert audit(PortalAction.SIGN_IN_REFUSED) == 1
    assert user.groups.count() == 0


@pytest.mark.django_db
def test_another_principal_in_the_same_session_is_signed_in_as_itself(client, easy_auth):
    client.get(reverse("registry_admin:audit"), headers=through_front_end(principal()))
    other = principal(oid="77-vic", name="vic@example.org", groups=["oyster-readers"])
    client.get(reverse("registry_admin:audit"), headers=through_front_end(other))
    assert client.session["_auth_user_id"] == str(
        get_user_model().objects.get(username="vic@example.org").pk
    )


@pytest.mark.django_db
def test_roles_as_app_roles_under_their_long_name(client, easy_auth):
    easy_auth.OIDC_ROLE_CLAIM = "roles"
    document = {
        "auth_typ": "aad",
        "claims": [
            {"typ": OID, "val": "r-1"},
            {"typ": "preferred_username", "val": "rae"},
            {
                "typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
                "val": "oyster-readers",
            },
        ],
    }
    value = base64.b64encode(json.dumps(document).encode()).decode()
    assert (
        client.get(reverse("registry_admin:audit"), headers=through_front_end(value)).status_code
        == 200
    )
    assert get_user_model().objects.get(username="rae").groups.get().name == "viewer"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("app_service_auth", "proxy_count", "forwarded"),
    [
        (False, 1, "203.0.113.9"),  # the setting off: never
        (True, 0, "203.0.113.9"),  # no proxy configured (a startup error besides)
        (True, 1, None),  # straight to the container, past the front end
        (True, 1, " , "),
        (True, 2, "203.0.113.9"),  # fewer hops than the proxies configured
    ],
)
def test_the_header_is_ignored_unless_it_came_through_the_front_end(
    client, easy_auth, app_service_auth, proxy_count, forwarded
):
    easy_auth.APP_SERVICE_AUTH = app_service_auth
    easy_auth.PROXY_COUNT = proxy_count
    response = client.get(
        reverse("registry_admin:audit"), headers=through_front_end(principal(), forwarded)
    )
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert not get_user_model().objects.exists()
    assert not AuditEvent.objects.exists()


def b64(data):
    return base64.b64encode(data).decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "value",
    [
        "",
        "not base64 !!!",
        "eyJ",  # truncated
        b64(b"<xml/>"),
        b64(b"\xff\xfe\x00garbage"),
        b64(b"[1, 2]"),
        b64(b'{"claims": "admin"}'),
        b64(b'{"claims": [1, null, ["x"], {"typ": 1, "val": 2}]}'),
        b64(json.dumps({"claims": [{"typ": "groups", "val": "oyster-admins"}]}).encode()),
        b64(b"[" * 50000 + b"]" * 50000),
        b64(json.dumps({"claims": [{"typ": "x", "val": "y"}] * 2000}).encode()),
        principal() + "A" * 70000,
        principal(oid="x\x00y", name="<script>alert(1)</script>"),
        principal(oid="a" * 100000),
    ],
)
def test_garbage_forged_and_oversized_principals_never_fail(client, easy_auth, value):
    response = client.get(reverse("registry_admin:audit"), headers=through_front_end(value))
    assert response.status_code in (200, 302, 403)
    assert b"<script>alert(1)</script>" not in response.content
    if response.status_code == 200:
        user = get_user_model().objects.get()
        assert len(user.username) <= 150 and "<" not in user.username


@pytest.mark.django_db
def test_logging_out_ends_app_services_session_too(client, easy_auth):
    client.get(reverse("registry_admin:audit"), headers=through_front_end(principal()))
    response = client.post(reverse("logout"))
    assert response.status_code == 302 and response["Location"] == "/.auth/logout"
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_the_login_page_links_to_app_services_sign_in(client, easy_auth):
    easy_auth.OIDC_PROVIDER_NAME = "Microsoft Entra ID"
    content = client.get(reverse("login") + "?next=/audit/%3Fq%3D1").content.decode()
    assert 'href="/.auth/login/aad?post_login_redirect_uri=/audit/%3Fq%3D1"' in content
    assert "Sign in with Microsoft Entra ID" in content
    easy_auth.APP_SERVICE_AUTH = False
    assert "/.auth/login" not in client.get(reverse("login")).content.decode()
