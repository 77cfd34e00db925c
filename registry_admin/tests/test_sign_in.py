"""Directory sign-in without the provider: claims to accounts and roles, hostile claims, the
LOCAL_LOGIN switch, the settings' parsing and checks. The flow through a real OpenID Provider
is in tests/test_browser_oidc.py."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

from portal.settings import _role_map
from registry_admin import checks, directory
from registry_admin.models import AuditEvent, DirectoryIdentity, PortalAction

from .factories import TEST_PASSWORD

ISSUER = "https://login.example.org"
MAP = {"oyster-admins": "admin", "oyster-readers": "viewer"}


@pytest.fixture
def mapped(settings):
    settings.OIDC_ROLE_MAP = MAP
    settings.OIDC_ROLE_CLAIM = "groups"
    return settings


def roles(user):
    return sorted(user.groups.values_list("name", flat=True))


def test_role_map_parsing():
    assert _role_map(" a=admin , b=Viewer,, ") == {"a": "admin", "b": "viewer"}
    # The role is what follows the last `=`; a comma always separates pairs.
    assert _role_map("cn=Admins=admin") == {"cn=Admins": "admin"}
    assert _role_map("") == {}
    for bad in ("admins", "=admin", "x=root", "x=", "x=admin,y", "cn=x,ou=y=admin"):
        with pytest.raises(ImproperlyConfigured, match="OIDC_ROLE_MAP"):
            _role_map(bad)


@pytest.mark.django_db
def test_admin_wins_over_viewer_and_the_role_follows_each_sign_in(mapped):
    claims = {"sub": "s-1", "preferred_username": "dana", "groups": ["oyster-readers"]}
    user = directory.sign_in(ISSUER, claims, via="oidc")
    assert roles(user) == ["viewer"]
    user = directory.sign_in(
        ISSUER, claims | {"groups": ["oyster-readers", "oyster-admins"]}, via="oidc"
    )
    assert roles(user) == ["admin"]
    # A single string is a value too (App Service, some providers).
    user = directory.sign_in(ISSUER, claims | {"groups": "oyster-readers"}, via="oidc")
    assert roles(user) == ["viewer"]
    with pytest.raises(directory.Refused) as refused:
        directory.sign_in(ISSUER, claims | {"groups": ["Oyster-Admins"]}, via="oidc")
    assert refused.value.code == "no-role"
    assert roles(get_user_model().objects.get(username="dana")) == []
    assert get_user_model().objects.count() == 1


@pytest.mark.django_db
def test_a_directory_user_never_takes_over_a_local_account(mapped, admin_user):
    claims = {
        "sub": "s-2",
        "preferred_username": admin_user.username.upper(),
        "groups": ["oyster-admins"],
    }
    with pytest.raises(directory.Refused) as refused:
        directory.sign_in(ISSUER, claims, via="oidc")
    assert refused.value.code == "name-taken"
    assert not DirectoryIdentity.objects.exists()
    # The same subject at another issuer is another person.
    directory.sign_in(
        ISSUER, {"sub": "s-3", "preferred_username": "p", "groups": ["oyster-admins"]}, via="oidc"
    )
    with pytest.raises(directory.Refused):
        directory.sign_in(
            "https://other.example.org",
            {"sub": "s-3", "preferred_username": "p", "groups": ["oyster-admins"]},
            via="oidc",
        )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "claims",
    [
        {},
        {"sub": ""},
        {"sub": 12, "groups": ["oyster-admins"]},
        {"sub": ["a"], "groups": ["oyster-admins"]},
        {"sub": "x", "groups": {"oyster-admins": True}},
        {"sub": "x", "groups": [None, 3, ["oyster-admins"]]},
        {"sub": "x", "groups": ["g"] * 100000},
        {"sub": "x\x00y", "groups": ["oyster-readers\x00"]},
        {"sub": "x", "groups": ["oyster-admins"], "preferred_username": "<script>", "email": 5},
        {"sub": "x" * 100000, "groups": ["oyster-admins"], "preferred_username": "é" * 1000},
    ],
)
def test_hostile_claims_are_refused_or_cut_never_an_error(mapped, claims):
    try:
        user = directory.sign_in(ISSUER, claims, via="oidc")
    except directory.Refused as refused:
        assert refused.sentence
        return
    assert len(user.username) <= 150 and "<" not in user.username
    assert len(DirectoryIdentity.objects.get(user=user).subject) <= 255


@pytest.mark.django_db
def test_sign_ins_and_refusals_are_audited(mapped):
    directory.sign_in(
        ISSUER, {"sub": "a", "preferred_username": "ann", "groups": ["oyster-admins"]}, via="oidc"
    )
    with pytest.raises(directory.Refused):
        directory.sign_in(
            ISSUER, {"sub": "b", "preferred_username": "bob", "groups": ["x"]}, via="oidc"
        )
    rows = {e.action: (e.actor, json.loads(e.raw)) for e in AuditEvent.objects.all()}
    assert rows[PortalAction.SIGNED_IN] == (
        "ann",
        {"via": "oidc", "role": "admin", "created": True},
    )
    assert rows[PortalAction.SIGN_IN_REFUSED] == (
        "bob",
        {"via": "oidc", "reason": "no-role", "values": ["x"]},
    )


@pytest.mark.django_db
def test_a_disabled_account_is_refused(mapped):
    user = directory.sign_in(
        ISSUER, {"sub": "a", "preferred_username": "ann", "groups": ["oyster-admins"]}, via="oidc"
    )
    user.is_active = False
    user.save()
    with pytest.raises(directory.Refused) as refused:
        directory.sign_in(ISSUER, {"sub": "a", "groups": ["oyster-admins"]}, via="oidc")
    assert refused.value.code == "disabled"


@pytest.mark.django_db
def test_local_login_off_refuses_everyone_but_the_break_glass_admin(
    client, settings, admin_user, viewer_user
):
    settings.LOCAL_LOGIN = False
    settings.LOCAL_LOGIN_BREAK_GLASS = admin_user.username
    response = client.post(
        reverse("login"), {"username": viewer_user.username, "password": TEST_PASSWORD}
    )
    assert response.status_code == 200 and "_auth_user_id" not in client.session
    response = client.post(
        reverse("login"), {"username": admin_user.username, "password": TEST_PASSWORD}
    )
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(admin_user.pk)
    client.logout()
    settings.LOCAL_LOGIN_BREAK_GLASS = ""
    response = client.post(
        reverse("login"), {"username": admin_user.username, "password": TEST_PASSWORD}
    )
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_oidc_endpoints_when_not_set_up_and_with_hostile_input(client, settings):
    settings.OIDC_ISSUER = ""
    assert client.get(reverse("oidc-start")).status_code == 404
    assert client.get(reverse("oidc-callback") + "?code=x&state=y").status_code == 404
    assert client.post(reverse("oidc-start")).status_code == 405
    settings.OIDC_ISSUER = "http://127.0.0.1:9"
    settings.OIDC_ROLE_MAP = MAP
    for query in ("", "?state=" + "x" * 5000, "?error=%3Cscript%3E&state=x", "?code=%00&state=%00"):
        response = client.get(reverse("oidc-callback") + query)
        assert response.status_code in (403, 503)
        assert b"<script>" not in response.content
    assert not AuditEvent.objects.exists()


def problems(settings, **values):
    for name, value in values.items():
        setattr(settings, name, value)
    return {p.id for p in checks.check_sign_in_settings(None)}


def test_sign_in_settings_are_checked(settings):
    settings.OIDC_ROLE_MAP = MAP
    settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET = "id", "secret"
    assert problems(settings, OIDC_ISSUER="https://login.example.org") == set()
    assert problems(settings, OIDC_ISSUER="http://login.example.org") == {"oyster.E070"}
    assert problems(settings, OIDC_ISSUER="http://127.0.0.1:8080") == set()
    assert problems(settings, OIDC_ISSUER="javascript:x") == {"oyster.E070"}
    assert problems(settings, OIDC_ISSUER="https://a", OIDC_CLIENT_SECRET="") == {"oyster.E071"}
    settings.OIDC_CLIENT_SECRET = "secret"
    assert problems(settings, OIDC_SCOPES="profile") == {"oyster.E072"}
    settings.OIDC_SCOPES = "openid"
    assert problems(settings, OIDC_ROLE_MAP={}) == {"oyster.E073"}
    settings.OIDC_ROLE_MAP = MAP
    assert problems(settings, APP_SERVICE_AUTH=True, PROXY_COUNT=0) == {"oyster.E074"}
    assert problems(settings, PROXY_COUNT=1) == set()
    assert problems(settings, LOCAL_LOGIN=False, LOCAL_LOGIN_BREAK_GLASS="") == {"oyster.W070"}
    assert problems(
        settings, OIDC_ISSUER="", APP_SERVICE_AUTH=False, LOCAL_LOGIN_BREAK_GLASS="root"
    ) == {"oyster.E075"}


def configure(settings, issuer):
    settings.OIDC_ISSUER = issuer
    settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET = "portal", "secret"
    settings.OIDC_ROLE_MAP = MAP
    settings.OIDC_TIMEOUT = 1.0


@pytest.mark.django_db
def test_a_provider_that_never_answers_costs_one_timeout(client, settings):
    # The kernel completes the connection (listen backlog); nothing ever reads or answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        configure(settings, f"http://127.0.0.1:{silent.getsockname()[1]}")
        settings.OIDC_TIMEOUT = 2.0
        started = time.monotonic()
        response = client.get(reverse("oidc-start"))
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert "could not be reached" in response.content.decode()
    # One timeout (2 s), not two: room for a loaded machine, not for a second attempt.
    assert 1.9 < elapsed < 3.9


class FakeDiscovery(BaseHTTPRequestHandler):
    """A server at the issuer's address answering what it was told to: HTML, a document for
    another issuer, a document without endpoints."""

    body = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, *args):
        pass


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        b"<html>not json</html>",
        b"[]",
        b'{"issuer": "https://evil.example.org", "authorization_endpoint": "http://x/a", '
        b'"token_endpoint": "http://x/t", "jwks_uri": "http://x/k"}',
        b'{"issuer": "ISSUER"}',
        b'{"issuer": "ISSUER", "authorization_endpoint": "javascript:alert(1)", '
        b'"token_endpoint": "http://x/t", "jwks_uri": "http://x/k"}',
        b"{" * 100000,
    ],
)
def test_a_provider_answering_nonsense_is_unavailable_not_an_error(client, settings, body):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeDiscovery)
    issuer = f"http://127.0.0.1:{server.server_address[1]}"
    server.body = body.replace(b"ISSUER", issuer.encode())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        configure(settings, issuer)
        response = client.get(reverse("oidc-start"))
    finally:
        server.shutdown()
        server.server_close()
    assert response.status_code == 503
    assert "could not be reached" in response.content.decode()
    assert "Location" not in response
