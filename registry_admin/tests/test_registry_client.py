"""The registry client against the real registry: manifests of all four media types, catalog
pages, tags, errors, and bearer-token auth against a real `auth: token` registry whose tokens come
from a small token server in this file (RS256 JWTs signed with a throwaway key)."""

import base64
import contextlib
import json
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from registry_admin import registry as registry_module
from registry_admin.registry import (
    RegistryClient,
    RegistryError,
    RegistryNotFound,
    RegistryTimeout,
    RegistryUnauthorized,
    RegistryUnreachable,
    parse_bearer_challenge,
)
from registry_admin.registry_config import local_registry_config

from .harness import (
    PUSH_PASSWORD,
    PUSH_USER,
    SERVICE_PASSWORD,
    SERVICE_USER,
    QuietHandler,
    free_port,
    serving,
    start_registry,
)
from .images import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, build_image, build_index

pytestmark = pytest.mark.django_db(transaction=True)


def _client(registry, **kwargs):
    return RegistryClient(registry.url, SERVICE_USER, SERVICE_PASSWORD, timeout=5, **kwargs)


def _unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_manifests_of_all_four_types_come_back_with_the_registrys_digest(registry):
    pusher, client = registry.pusher(), _client(registry)
    base = _unique("client")
    images = {
        f"{base}/oci": (build_image(), OCI_MANIFEST),
        f"{base}/docker": (build_image(docker=True), DOCKER_MANIFEST),
        f"{base}/index": (build_index(), OCI_INDEX),
        f"{base}/list": (build_index(docker=True), DOCKER_LIST),
    }
    for name, (image, media_type) in images.items():
        pushed = pusher.push_image(name, "1.0-rc.1", image)
        ref = client.head_manifest(name, "1.0-rc.1")
        assert ref.digest == pushed == image.digest
        assert ref.media_type == media_type
        assert ref.size == len(image.manifest)
        document = client.get_manifest(name, "1.0-rc.1")
        assert (document.digest, document.media_type, document.raw) == (
            image.digest,
            media_type,
            image.manifest,
        )
        assert document.is_index == (media_type in (OCI_INDEX, DOCKER_LIST))
        assert client.get_manifest(name, image.digest).raw == image.manifest
    oci = images[f"{base}/oci"][0]
    config = client.get_config(f"{base}/oci", oci.config_digest)
    assert config["created"] == "2024-01-02T03:04:05Z"
    assert config["architecture"] == "amd64"


def test_catalog_pages_follow_the_link_header(registry):
    pusher, client = registry.pusher(), _client(registry)
    base = _unique("catalog")
    image = build_image()
    for letter in "abcde":
        pusher.push_image(f"{base}/{letter}", "v1", image)
    catalog_requests = []
    client.session.hooks["response"].append(
        lambda response, **kw: (
            catalog_requests.append(response.url) if "/_catalog" in response.url else None
        )
    )
    everything = client.list_repositories()
    assert catalog_requests and len(catalog_requests) == 1
    paged = client.list_repositories(page_size=2)
    assert paged == everything
    assert {f"{base}/{letter}" for letter in "abcde"} <= set(paged)
    assert len(catalog_requests) - 1 >= len(everything) // 2
    # The registry answers 400 above 1000; the client clamps instead of failing.
    assert client.list_repositories(page_size=5000) == everything


def test_tags_list_and_empty_repository(registry):
    pusher, client = registry.pusher(), _client(registry)
    name = _unique("tags") + "/app"
    image = build_image()
    for tag in ("v1", "v1.2.3", "latest"):
        pusher.push_image(name, tag, image)
    assert sorted(client.list_tags(name)) == ["latest", "v1", "v1.2.3"]
    deleted = requests.delete(
        f"{registry.url}/v2/{name}/manifests/{image.digest}",
        auth=(PUSH_USER, PUSH_PASSWORD),
        timeout=5,
    )
    assert deleted.status_code == 202
    # 2.8 keeps the repository in the catalog with `{"tags": null}`.
    assert client.list_tags(name) == []
    with pytest.raises(RegistryNotFound, match="no repository"):
        client.list_tags(_unique("never-pushed"))


def test_missing_manifest_wrong_password_and_invalid_names(registry):
    client = _client(registry)
    name = _unique("missing")
    registry.pusher().push_image(name, "v1", build_image())
    with pytest.raises(RegistryNotFound, match=f"manifest {name}:v2"):
        client.head_manifest(name, "v2")
    with pytest.raises(RegistryNotFound):
        client.get_manifest(name, "sha256:" + "0" * 64)
    bad = RegistryClient(registry.url, SERVICE_USER, "wrong-password", timeout=5)
    with pytest.raises(RegistryUnauthorized, match="REGISTRY_PASSWORD"):
        bad.list_tags(name)
    calls = []
    client.session.hooks["response"].append(lambda response, **kw: calls.append(response.url))
    for repository in ["../v2/_catalog", "a/../b", "A", "<script>", "a" * 300, "x\n", "", "a//b"]:
        with pytest.raises(RegistryNotFound, match="not a valid repository"):
            client.list_tags(repository)
    for reference in ["../../_catalog", "-x", ".x", "a" * 129, "v1\x00", "<b>", "sha256:zz"]:
        with pytest.raises(RegistryNotFound, match="not a valid tag or digest"):
            client.head_manifest(name, reference)
    assert calls == []


def test_unreachable_registry_and_timeouts_are_readable():
    closed = RegistryClient(f"http://127.0.0.1:{free_port()}", timeout=1, retries=0)
    with pytest.raises(RegistryUnreachable, match="unreachable"):
        closed.list_repositories()
    with _silent_server() as url:
        slow = RegistryClient(url, timeout=0.5, retries=0)
        with pytest.raises(RegistryTimeout, match="did not answer within 0.5 seconds"):
            slow.list_tags("team/app")


class _StubHandler(QuietHandler):
    """Serves whatever `routes[(method, path)]` says: (status, headers, body)."""

    routes = {}

    def _answer(self):
        self.answer(*self.routes.get((self.command, self.path.split("?")[0]), (404, {}, b"{}")))

    do_GET = do_HEAD = _answer


@contextlib.contextmanager
def _stub_server(routes):
    with serving(type("Handler", (_StubHandler,), {"routes": routes})) as server:
        yield server.url


@contextlib.contextmanager
def _silent_server():
    """Accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_a_manifest_that_does_not_match_its_digest_or_is_huge_is_refused():
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode()
    routes = {
        ("GET", "/v2/team/app/manifests/v1"): (
            200,
            {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": "sha256:" + "1" * 64},
            body,
        ),
        ("GET", "/v2/team/app/manifests/huge"): (
            200,
            {"Content-Type": OCI_MANIFEST},
            b" " * (registry_module.MAX_MANIFEST_BYTES + 1),
        ),
        ("GET", "/v2/team/app/manifests/html"): (200, {"Content-Type": "text/html"}, b"<html>"),
    }
    with _stub_server(routes) as url:
        client = RegistryClient(url, timeout=2, retries=0)
        with pytest.raises(RegistryError, match="does not match"):
            client.get_manifest("team/app", "v1")
        with pytest.raises(RegistryError, match="larger than 4 MB"):
            client.get_manifest("team/app", "huge")
        with pytest.raises(RegistryError, match="not JSON"):
            client.get_manifest("team/app", "html")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.example/token",service="registry.example",'
            'scope="repository:team/app:pull,push"',
            {
                "realm": "https://auth.example/token",
                "service": "registry.example",
                "scope": "repository:team/app:pull,push",
            },
        ),
        ('bearer realm="http://a/t"', {"realm": "http://a/t"}),
        (
            'Basic realm="x", Bearer realm="http://a/t", service=reg',
            {"realm": "http://a/t", "service": "reg"},
        ),
        (
            'Bearer realm="http://a/t",service="s", Basic realm="other"',
            {"realm": "http://a/t", "service": "s"},
        ),
        ('Bearer realm="a\\"b"', {"realm": 'a"b'}),
        ('Basic realm="Oyster"', None),
        ("Bearer", None),
        ('Bearer service="no-realm"', None),
        ("", None),
        ("Bearer realm=" + "x" * 10000, {"realm": "x" * 10000}),
    ],
)
def test_bearer_challenge_parsing(header, expected):
    assert parse_bearer_challenge(header) == expected


# --- bearer tokens against a real `auth: token` registry ------------------------------------

TOKEN_SERVICE = "oyster-test-registry"
TOKEN_ISSUER = "oyster-test-issuer"


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _TokenIssuer:
    """Signs registry tokens (https://distribution.github.io/distribution/spec/auth/jwt/)."""

    def __init__(self, directory):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "oyster test token issuer")])
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = directory / "token-root.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.requests = []

    def token(self, subject, scopes):
        header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        now = int(time.time())
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        claims = {
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "aud": TOKEN_SERVICE,
            "exp": now + 300,
            "nbf": now - 30,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)


@contextlib.contextmanager
def _token_server(issuer, username, password):
    expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    class Handler(QuietHandler):
        def do_GET(self):
            query = parse_qs(urlsplit(self.path).query)
            issuer.requests.append(
                {"scope": query.get("scope", []), "service": query.get("service", [""])[0]}
            )
            if self.headers.get("Authorization") != expected:
                self.answer(401, {})
                return
            body = json.dumps(
                {"token": issuer.token(username, query.get("scope", [])), "expires_in": 300}
            ).encode()
            self.answer(200, {"Content-Type": "application/json"}, body)

    with serving(Handler) as server:
        yield server, server.url + "/token"


def test_bearer_token_auth_against_a_real_token_registry(tmp_path, live_server):
    issuer = _TokenIssuer(tmp_path)
    reg = start_registry(tmp_path / "registry", live_server.url)
    try:
        image, index = build_image(), build_index()
        reg.pusher().push_image("tok/app", "v1", image)
        reg.pusher().push_image("tok/multi", "v2", index)
        with _token_server(issuer, SERVICE_USER, SERVICE_PASSWORD) as (server, realm):
            config = local_registry_config(
                listen=f"127.0.0.1:{reg.port}",
                storage_root=reg.storage_root,
                htpasswd_path=reg.htpasswd_path,
                portal_url=live_server.url,
                token="unused",
            )
            config["auth"] = {
                "token": {
                    "realm": realm,
                    "service": TOKEN_SERVICE,
                    "issuer": TOKEN_ISSUER,
                    "rootcertbundle": str(issuer.bundle),
                }
            }
            reg.restart(config)
            challenge = requests.get(f"{reg.url}/v2/tok/app/tags/list", timeout=5)
            assert challenge.status_code == 401
            assert challenge.headers["WWW-Authenticate"].startswith("Bearer ")

            client = RegistryClient(reg.url, SERVICE_USER, SERVICE_PASSWORD, timeout=5)
            assert {"tok/app", "tok/multi"} <= set(client.list_repositories())
            assert client.list_tags("tok/app") == ["v1"]
            assert client.head_manifest("tok/app", "v1").digest == image.digest
            assert client.get_manifest("tok/multi", "v2").digest == index.digest
            assert client.get_config("tok/app", image.config_digest)["os"] == "linux"
            # Tokens are cached per scope: repeating the calls fetches none.
            fetched = len(issuer.requests)
            for _ in range(3):
                client.head_manifest("tok/app", "v1")
                client.list_tags("tok/app")
            assert len(issuer.requests) == fetched
            scopes = {scope for r in issuer.requests for scope in r["scope"]}
            assert {"registry:catalog:*", "repository:tok/app:pull"} <= scopes
            assert {r["service"] for r in issuer.requests} == {TOKEN_SERVICE}

            wrong = RegistryClient(reg.url, SERVICE_USER, "wrong", timeout=5)
            with pytest.raises(RegistryUnauthorized, match="token server .* rejected"):
                wrong.list_tags("tok/app")
        # Token server gone: a readable "unreachable", not a traceback.
        fresh = RegistryClient(reg.url, SERVICE_USER, SERVICE_PASSWORD, timeout=2, retries=0)
        with pytest.raises(RegistryUnreachable, match="token server"):
            fresh.list_tags("tok/app")
    finally:
        reg.stop()


# --- The write check (issue #27 item 8) --------------------------------------------------------


def test_the_write_check_leaves_nothing_behind_in_the_storage(registry):
    """`read_only_state` opened an upload to see whether the registry accepts writes and
    cancelled it without the Location's `_state`: 2.8 answered 404 BLOB_UPLOAD_INVALID and
    `_uploads/<uuid>/data` and `startedat` stayed, one more each time the check ran (and a
    cancel with `_state` still leaves `hashstates/`). On an image's repository, as the
    collector asks, and on a repository that does not exist."""
    pusher, client = registry.pusher(), _client(registry)
    existing, new = _unique("check/app"), _unique("check/none")
    pusher.push_image(existing, "v1", build_image())
    repositories = registry.storage_root / "docker/registry/v2/repositories"
    before = sorted(p.relative_to(repositories) for p in (repositories / existing).rglob("*"))
    for repository in (existing, new):
        for _ in range(2):
            assert client.read_only_state(repository)[0] == "writable"
    assert not list((repositories / existing).rglob("_uploads/*"))
    assert sorted(p.relative_to(repositories) for p in (repositories / existing).rglob("*")) == (
        before
    )
    assert not (repositories / new).exists()
    assert pusher.tags(existing) == ["v1"]
