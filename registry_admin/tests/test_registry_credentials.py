"""Where the service account's credentials may go (issue #14 item 4): a registry that names a
token realm on another host, over plain HTTP, or redirects elsewhere gets nothing sent there.

The "registry" here is a fake HTTP server, because the point is a registry (or something posing
as one) answering what a real one would not; the other host is a second listener on 127.0.0.2.
"""

import contextlib

import pytest

from registry_admin.registry import RegistryClient, RegistryError, RegistryUnauthorized

from .harness import QuietHandler, serving

USER, PASSWORD = "oyster", "service-password-0123456789"


@contextlib.contextmanager
def server(answer, host="127.0.0.1"):
    """An HTTP server on `host` that records every request and answers with `answer(handler)`."""
    seen = []

    class Handler(QuietHandler):
        def handle_one(self):
            seen.append({"path": self.path, "authorization": self.headers.get("Authorization")})
            self.answer(*answer(self))

        do_GET = do_HEAD = do_DELETE = handle_one

    with serving(Handler, host) as httpd:
        yield httpd.url, seen


def token_answer(handler):
    return 200, {"Content-Type": "application/json"}, b'{"token": "t", "expires_in": 300}'


def challenging(realm):
    def answer(handler):
        if (handler.headers.get("Authorization") or "").startswith("Bearer "):
            return 200, {"Content-Type": "application/json"}, b'{"name": "a", "tags": ["v1"]}'
        challenge = f'Bearer realm="{realm}",service="registry",scope="repository:a:pull"'
        return 401, {"WWW-Authenticate": challenge}, b"{}"

    return answer


def test_a_realm_on_another_host_receives_no_credentials():
    with (
        server(token_answer, host="127.0.0.2") as (elsewhere, stolen),
        server(challenging(f"{elsewhere}/token")) as (registry, _),
    ):
        client = RegistryClient(registry, USER, PASSWORD, timeout=3, retries=0)
        with pytest.raises(RegistryUnauthorized, match="another host .*127.0.0.2"):
            client.list_tags("a")
    assert stolen == []


@pytest.mark.parametrize(
    "realm",
    [
        "http://127.0.0.1@127.0.0.2:{port}/token",  # user-info trick: the host is 127.0.0.2
        "http://127.0.0.2:{port}/token#@127.0.0.1",
        "http://127.0.0.2.:{port}/token",
    ],
)
def test_realm_host_tricks_receive_no_credentials(realm):
    with server(token_answer, host="127.0.0.2") as (elsewhere, stolen):
        port = elsewhere.rsplit(":", 1)[1]
        with server(challenging(realm.format(port=port))) as (registry, _):
            client = RegistryClient(registry, USER, PASSWORD, timeout=3, retries=0)
            with pytest.raises(RegistryError):
                client.list_tags("a")
    assert stolen == []


def test_a_realm_host_on_the_allow_list_gets_the_token_request():
    with (
        server(token_answer, host="127.0.0.2") as (elsewhere, asked),
        server(challenging(f"{elsewhere}/token")) as (registry, _),
    ):
        client = RegistryClient(
            registry, USER, PASSWORD, timeout=3, retries=0, token_hosts=["127.0.0.2"]
        )
        assert client.list_tags("a") == ["v1"]
    assert len(asked) == 1 and asked[0]["authorization"].startswith("Basic ")


def test_a_realm_on_the_registrys_own_host_still_works():
    with (
        server(token_answer) as (token_server, asked),
        server(challenging(f"{token_server}/token")) as (registry, _),
    ):
        client = RegistryClient(registry, USER, PASSWORD, timeout=3, retries=0)
        assert client.list_tags("a") == ["v1"]
    assert len(asked) == 1


def test_an_https_registry_never_sends_credentials_to_a_plain_http_realm():
    """Checked before any connection: the realm is refused by its scheme alone."""
    client = RegistryClient("https://registry.example", USER, PASSWORD, timeout=1, retries=0)
    auth = client.session.auth
    with pytest.raises(RegistryUnauthorized, match="plain HTTP"):
        auth._fetch_token({"realm": "http://registry.example/token"})


def test_a_redirect_to_another_host_is_not_followed():
    with server(token_answer, host="127.0.0.2") as (elsewhere, reached):

        def redirecting(handler):
            return 302, {"Location": f"{elsewhere}/internal/admin"}, b""

        with server(redirecting) as (registry, _):
            client = RegistryClient(registry, USER, PASSWORD, timeout=3, retries=0)
            with pytest.raises(RegistryError, match="redirected a request to another host"):
                client.list_tags("a")
    assert reached == []


def test_a_redirect_on_the_registrys_own_host_is_followed():
    def answer(handler):
        if handler.path.startswith("/v2/a/tags/list"):
            return 307, {"Location": "/moved/tags"}, b""
        return 200, {"Content-Type": "application/json"}, b'{"name": "a", "tags": ["v2"]}'

    with server(answer) as (registry, seen):
        client = RegistryClient(registry, USER, PASSWORD, timeout=3, retries=0)
        assert client.list_tags("a") == ["v2"]
    # The first request carries the page size (`?n=`); the redirect target is followed as given.
    assert [r["path"].split("?")[0] for r in seen] == ["/v2/a/tags/list", "/moved/tags"]


def test_in_token_mode_the_portal_signs_its_own_token_and_sends_the_realm_nothing():
    """REGISTRY_AUTH_MODE=token: the portal is the token server, usually on another host than
    the registry. Its client signs the service account's token in process, so the realm (here
    on 127.0.0.2) receives no request and no password, and the registry gets the minted token."""
    asked = []

    def minter(service, scopes):
        asked.append((service, scopes))
        return ("minted-token", 300) if service == "registry" else None

    seen_tokens = []

    def registry_answer(handler):
        authorization = handler.headers.get("Authorization") or ""
        if authorization.startswith("Bearer "):
            seen_tokens.append(authorization)
        return challenging(f"{elsewhere}/auth/token")(handler)

    with (
        server(token_answer, host="127.0.0.2") as (elsewhere, realm_seen),
        server(registry_answer) as (registry, _),
    ):
        client = RegistryClient(registry, USER, PASSWORD, timeout=3, retries=0, token_minter=minter)
        assert client.list_tags("a") == ["v1"]
    assert realm_seen == []
    assert asked == [("registry", ["repository:a:pull"])]
    assert seen_tokens == ["Bearer minted-token"]


@pytest.mark.django_db
def test_the_portals_minter_grants_its_service_account_only_for_its_own_service(settings, tmp_path):
    import jwt

    from registry_admin import tokens

    settings.TOKEN_KEY_DIR = str(tmp_path)
    assert tokens.mint_for_portal("someone-elses-registry", ["repository:a:pull"]) is None
    token, lifetime = tokens.mint_for_portal(settings.TOKEN_SERVICE, ["repository:team/app:*"])
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == settings.REGISTRY_USERNAME
    assert claims["aud"] == settings.TOKEN_SERVICE
    assert claims["access"] == [
        {"type": "repository", "name": "team/app", "actions": ["pull", "push", "delete", "*"]}
    ]
    assert lifetime == settings.TOKEN_LIFETIME
    assert tokens.mint_for_portal(settings.TOKEN_SERVICE, ["not a scope"]) is None
