"""Signing in with the organisation's identity, in Debian's Chromium, through a real OpenID
Provider (npm's oidc-provider, tests/oidc/provider.mjs) that requires PKCE."""

import json
import re
import time
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from registry_admin.models import AuditEvent, DirectoryIdentity, PortalAction
from registry_admin.tests import harness
from registry_admin.tests.factories import TEST_PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROLE_MAP = {"oyster-admins": "admin", "oyster-readers": "viewer"}
PROVIDER_NAME = "Test Directory"


@harness.live_fixture(scope="session")
def oidc_provider(live_server, tmp_path_factory):
    callback = "/login/oidc/callback/"
    port = urlsplit(live_server.url).port
    provider = harness.start_oidc_provider(
        tmp_path_factory.mktemp("oidc"),
        [f"http://localhost:{port}{callback}", f"http://127.0.0.1:{port}{callback}"],
    )
    yield provider
    provider.stop()


@pytest.fixture
def oidc(oidc_provider, settings):
    """The portal configured for the test provider, its users and spoiling reset."""
    oidc_provider.reset()
    settings.OIDC_ISSUER = oidc_provider.issuer
    settings.OIDC_CLIENT_ID = oidc_provider.client_id
    settings.OIDC_CLIENT_SECRET = oidc_provider.client_secret
    settings.OIDC_SCOPES = "openid profile email groups"
    settings.OIDC_PROVIDER_NAME = PROVIDER_NAME
    settings.OIDC_ROLE_MAP = ROLE_MAP
    settings.REGISTRY_URL = "http://127.0.0.1:9"
    return oidc_provider


@pytest.fixture
def page(page):
    # The provider's development login page imports a web font: nothing leaves the machine.
    def only_loopback(route):
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            route.abort()

    page.context.route("**/*", only_loopback)
    return page


def start(page, live_server, path="/login/"):
    page.goto(live_server.url + path)
    page.get_by_role("button", name=f"Sign in with {PROVIDER_NAME}").click()


def at_provider(page, login):
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill("anything")
    page.get_by_role("button", name="Sign-in").click()


def sign_in(page, live_server, login, path="/login/"):
    start(page, live_server, path)
    at_provider(page, login)


def refusals():
    rows = AuditEvent.objects.filter(action=PortalAction.SIGN_IN_REFUSED).order_by("id")
    return [json.loads(raw) for raw in rows.values_list("raw", flat=True)]


def test_oidc_first_sign_in_creates_the_user_with_the_role_of_their_group(page, live_server, oidc):
    oidc.set_groups("dana", ["staff", "oyster-admins"])
    oidc.set_groups("vic", ["oyster-readers"])
    sign_in(page, live_server, "dana", path="/audit/")
    expect(page).to_have_url(re.compile(r"/audit/$"))
    dana = get_user_model().objects.get(username="dana")
    assert list(dana.groups.values_list("name", flat=True)) == ["admin"]
    assert not dana.has_usable_password()
    assert dana.email == "dana@example.org"
    identity = DirectoryIdentity.objects.get(user=dana)
    assert (identity.issuer, identity.subject) == (oidc.issuer, "dana")
    event = AuditEvent.objects.get(action=PortalAction.SIGNED_IN, actor="dana")
    assert json.loads(event.raw) == {"via": "oidc", "role": "admin", "created": True}
    # Nothing the provider gave the portal reaches the page or the audit trail.
    assert "client-secret" not in page.content()

    page.context.clear_cookies()
    sign_in(page, live_server, "vic")
    expect(page.get_by_role("button", name=re.compile("Log out"))).to_be_visible()
    vic = get_user_model().objects.get(username="vic")
    assert list(vic.groups.values_list("name", flat=True)) == ["viewer"]
    assert not vic.has_perm("registry_admin.manage_registry_users")


def test_oidc_user_in_no_mapped_group_is_refused_with_a_sentence(page, live_server, oidc):
    oidc.set_groups("eve", ["staff"])
    sign_in(page, live_server, "eve")
    expect(page.get_by_role("alert")).to_contain_text("none of the groups that give a role")
    assert not get_user_model().objects.filter(username="eve").exists()
    assert page.goto(live_server.url + "/repositories/").url.startswith(live_server.url + "/login/")
    assert refusals() == [{"via": "oidc", "reason": "no-role", "values": ["staff"]}]


def test_oidc_changed_group_changes_the_role_at_next_sign_in(page, live_server, oidc):
    oidc.set_groups("dana", ["oyster-admins"])
    sign_in(page, live_server, "dana")
    expect(page.get_by_role("button", name=re.compile("Log out"))).to_be_visible()
    dana = get_user_model().objects.get(username="dana")
    assert dana.has_perm("registry_admin.manage_registry_users")

    # Moved to the readers: a viewer from the next sign-in on.
    oidc.set_groups("dana", ["oyster-readers"])
    page.context.clear_cookies()
    sign_in(page, live_server, "dana")
    expect(page.get_by_role("button", name=re.compile("Log out"))).to_be_visible()
    dana = get_user_model().objects.get(username="dana")
    assert list(dana.groups.values_list("name", flat=True)) == ["viewer"]
    assert not dana.has_perm("registry_admin.manage_registry_users")

    # Out of both: refused, and the session still open elsewhere loses the pages at once.
    other = page.context.browser.new_context()
    other.route("**/*", lambda r: r.abort() if "googleapis" in r.request.url else r.continue_())
    other_page = other.new_page()
    oidc.set_groups("dana", [])
    sign_in(other_page, live_server, "dana")
    expect(other_page.get_by_role("alert")).to_contain_text("none of the groups")
    other.close()
    assert get_user_model().objects.get(username="dana").groups.count() == 0
    assert page.goto(live_server.url + "/repositories/").status == 403
    assert AuditEvent.objects.filter(action=PortalAction.SIGNED_IN, actor="dana").count() == 2


def test_oidc_local_login_off_leaves_only_the_break_glass_admin(
    page, live_server, oidc, settings, admin_user, viewer_user
):
    settings.LOCAL_LOGIN = False
    settings.LOCAL_LOGIN_BREAK_GLASS = admin_user.username
    page.goto(live_server.url + "/login/")
    expect(page.get_by_role("button", name=f"Sign in with {PROVIDER_NAME}")).to_be_visible()
    expect(page.get_by_label("Username")).to_be_hidden()
    # The viewer's right password is not enough any more.
    page.get_by_text("Break-glass admin").click()
    page.get_by_label("Username").fill(viewer_user.username)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("correct username and password")
    # The break-glass admin still gets in.
    page.get_by_text("Break-glass admin").click()
    page.get_by_label("Username").fill(admin_user.username)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name=re.compile("Log out"))).to_be_visible()
    # Django's admin login goes through the same backend.
    page.context.clear_cookies()
    page.goto(live_server.url + "/django-admin/login/")
    page.locator("#id_username").fill(viewer_user.username)
    page.locator("#id_password").fill(TEST_PASSWORD)
    page.locator("input[type=submit]").click()
    expect(page.locator(".errornote")).to_be_visible()


@pytest.mark.parametrize("mode", ["expired", "wrong-aud", "forged", "wrong-iss", "wrong-nonce"])
def test_oidc_spoiled_id_tokens_are_refused(page, live_server, oidc, mode):
    oidc.set_groups("dana", ["oyster-admins"])
    oidc.tamper(mode)
    sign_in(page, live_server, "dana")
    expect(page.get_by_role("alert")).to_contain_text("did not pass the checks")
    assert not get_user_model().objects.filter(username="dana").exists()
    assert refusals() == [{"via": "oidc", "reason": "id-token"}]


@pytest.mark.parametrize("mode", ["alg-none", "no-id-token"])
def test_oidc_unsigned_or_missing_id_tokens_are_refused(page, live_server, oidc, mode):
    oidc.set_groups("dana", ["oyster-admins"])
    oidc.tamper(mode)
    sign_in(page, live_server, "dana")
    expect(page.get_by_role("alert")).to_be_visible()
    assert "_auth_user_id" not in page.content()
    assert not get_user_model().objects.filter(username="dana").exists()
    assert [d["reason"] for d in refusals()] == ["id-token"]


def to_callback(live_server, login):
    """A sign-in walked by hand up to the provider's answer, which is not delivered: the portal
    session, the authorization URL and the callback URL with its code and state."""
    session = requests.Session()
    started = session.get(live_server.url + "/login/oidc/", allow_redirects=False, timeout=10)
    assert started.status_code == 302
    authorize = url = started.headers["Location"]
    for _ in range(10):
        response = session.get(url, allow_redirects=False, timeout=10)
        if response.status_code == 200:
            # The provider's login form.
            action = re.search(r'action="([^"]+)"', response.text).group(1)
            response = session.post(
                urljoin(url, action),
                data={"prompt": "login", "login": login, "password": "anything"},
                allow_redirects=False,
                timeout=10,
            )
        assert response.status_code in (302, 303), response.text[:500]
        url = urljoin(url, response.headers["Location"])
        if "/login/oidc/callback/" in url:
            return session, authorize, url
    raise AssertionError("the provider never sent the browser back")


def test_oidc_replayed_state_is_refused(live_server, oidc):
    oidc.set_groups("dana", ["oyster-admins"])
    session, _, callback = to_callback(live_server, "dana")
    first = session.get(callback, allow_redirects=False, timeout=10)
    assert first.status_code == 302 and "sessionid" in session.cookies
    # The same answer again (a code and state from history or a log), in this browser or another.
    again = session.get(callback, allow_redirects=False, timeout=10)
    assert again.status_code == 403 and "has been used already" in again.text
    stranger = requests.get(callback, allow_redirects=False, timeout=10)
    assert stranger.status_code == 403
    # Nothing pending in those sessions: nothing written. A browser with a sign-in under way
    # that receives an old answer is refused, and that is recorded.
    assert refusals() == []
    session.get(live_server.url + "/login/oidc/", allow_redirects=False, timeout=10)
    assert session.get(callback, allow_redirects=False, timeout=10).status_code == 403
    assert refusals() == [{"via": "oidc", "reason": "state"}]
    assert AuditEvent.objects.filter(action=PortalAction.SIGNED_IN).count() == 1


def test_oidc_provider_requires_the_pkce_verifier_the_portal_sends(live_server, oidc):
    oidc.set_groups("dana", ["oyster-admins"])
    session, authorize, callback = to_callback(live_server, "dana")
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    code = parse_qs(urlsplit(callback).query)["code"][0]
    redirect_uri = callback.split("?", 1)[0]
    for extra in ({}, {"code_verifier": "x" * 43}):
        refused = requests.post(
            f"{oidc.issuer}/token",
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
            | extra,
            auth=(oidc.client_id, oidc.client_secret),
            timeout=5,
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] in ("invalid_grant", "invalid_request")
        assert "id_token" not in refused.text


@pytest.mark.parametrize("mode", ["token-down", "token-slow"])
def test_oidc_provider_failing_at_the_code_exchange_gives_a_message(
    page, live_server, oidc, settings, mode
):
    settings.OIDC_TIMEOUT = 1.0
    oidc.set_groups("dana", ["oyster-admins"])
    oidc.tamper(mode)
    started = time.monotonic()
    sign_in(page, live_server, "dana")
    expect(page.get_by_role("alert")).to_contain_text("could not be reached")
    assert time.monotonic() - started < 10
    assert not get_user_model().objects.filter(username="dana").exists()


def test_oidc_provider_down_gives_a_message_not_an_error(page, live_server, oidc, settings):
    settings.OIDC_ISSUER = f"http://127.0.0.1:{harness.free_port()}"
    page.goto(live_server.url + "/login/")
    page.get_by_role("button", name=f"Sign in with {PROVIDER_NAME}").click()
    expect(page.get_by_role("alert")).to_contain_text("could not be reached")
    expect(page.get_by_label("Username")).to_be_visible()


def test_oidc_user_creates_and_revokes_a_cli_secret_on_their_account_page(
    page, live_server, oidc, settings
):
    settings.REGISTRY_AUTH_MODE = "token"
    settings.REGISTRY_PUBLIC_HOST = "registry.example.org"
    oidc.set_groups("dana", ["oyster-readers"])
    sign_in(page, live_server, "dana")
    page.get_by_role("link", name="Your account").click()
    expect(page.get_by_text("Your registry user name will be dana,")).to_be_visible()
    page.get_by_label("Name").fill("laptop")
    page.get_by_label("Days valid").fill("7")
    page.get_by_role("button", name="Create a CLI secret").click()
    secret = page.get_by_label("Secret").input_value()
    assert secret.startswith("oyc_") and len(secret) > 40
    expect(page.get_by_text("docker login registry.example.org --username dana ")).to_be_visible()
    # Shown once: a reload of the page has the secret's row, not the secret.
    page.get_by_role("link", name="Your account").click()
    assert secret not in page.content()
    page.get_by_role("button", name="Revoke laptop").click()
    expect(page.get_by_text("Secret revoked")).to_be_visible()
    expect(page.get_by_role("button", name="Revoke laptop")).to_have_count(0)
