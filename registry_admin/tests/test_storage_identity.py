"""The storage scan signed in with a managed identity (AZURE_STORAGE_CREDENTIAL=default).

What is real here: Azurite over HTTPS with its OAuth check on (it decodes every bearer token
and checks audience, issuer and lifetime, not the signature), the azure-storage-blob SDK, and
azure-identity's own DefaultAzureCredential chain. What stands in: the managed identity itself.
No Azure account can run here, so a small HTTP server speaks App Service's managed identity
protocol (IDENTITY_ENDPOINT + IDENTITY_HEADER, api-version 2019-08-01), which is exactly what
azure-identity's ManagedIdentityCredential calls on App Service; it hands out tokens Azurite
accepts. The chain, the token cache, the bearer policy and the data path are the libraries'.
"""

import base64
import datetime
import ipaddress
import json
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.storage.blob import ContainerSasPermissions, generate_container_sas
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.management import call_command
from django.urls import reverse
from django.utils.html import escape

from registry_admin import checks, storage, worker
from registry_admin.models import Run
from registry_admin.tests import harness
from registry_admin.tests.storage_trees import (
    StorageTree,
    azure_settings,
    azurite_container,
    upload_tree,
)

IDENTITY_HEADER = "identity-header-for-the-test"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
# Every variable azure-identity's chain reads: the chain must reach the managed identity.
CHAIN_VARIABLES = (
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_TENANT_ID",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMDS_ENDPOINT",
    "IDENTITY_SERVER_THUMBPRINT",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS",
)


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(audience="https://storage.azure.com", lifetime=3600):
    """A JWT shaped like Entra ID's storage tokens (Azurite checks claims, not signatures)."""
    now = int(time.time())
    claims = {
        "aud": audience,
        "iss": f"https://sts.windows.net/{TENANT}/",
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + lifetime,
        "oid": "00000000-0000-0000-0000-0000000000aa",
        "tid": TENANT,
    }
    header = {"alg": "RS256", "typ": "JWT"}
    return ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(b"sig")]
    )


class IdentityEndpoint:
    """App Service's managed identity endpoint, as azure-identity calls it."""

    def __init__(self):
        self.requests = []
        self.audience = "https://storage.azure.com"
        self.refuse = False
        self.tokens = []
        endpoint = self

        class Handler(harness.QuietHandler):
            def do_GET(self):
                query = parse_qs(urlsplit(self.path).query)
                endpoint.requests.append((query, self.headers.get("X-IDENTITY-HEADER")))
                if endpoint.refuse or self.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
                    self._answer(400, {"statusCode": 400, "message": "No managed identity."})
                    return
                token = make_token(endpoint.audience)
                endpoint.tokens.append(token)
                self._answer(
                    200,
                    {
                        "access_token": token,
                        "expires_on": str(int(time.time()) + 3600),
                        "resource": query.get("resource", [""])[0],
                        "token_type": "Bearer",
                        "client_id": "00000000-0000-0000-0000-0000000000bb",
                    },
                )

            def _answer(self, status, body):
                self.answer(status, {"Content-Type": "application/json"}, json.dumps(body).encode())

        self._serving = harness.serving(Handler)
        self.server = self._serving.__enter__()
        self.url = self.server.url + "/msi/token"

    def stop(self):
        self._serving.__exit__(None, None, None)


def write_tls_files(directory):
    """A self-signed certificate for 127.0.0.1 (Azurite's HTTPS) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@harness.live_fixture(scope="module")
def azurite_tls(tmp_path_factory):
    directory = tmp_path_factory.mktemp("azurite-tls")
    cert_path, key_path = write_tls_files(directory)
    server = harness.start_azurite(directory, tls=(cert_path, key_path))
    server.ca_bundle = cert_path
    yield server
    server.stop()


@pytest.fixture
def identity(monkeypatch, azurite_tls):
    endpoint = IdentityEndpoint()
    for name in CHAIN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint.url)
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    # The SDK's requests transport trusts Azurite's self-signed certificate through this.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(azurite_tls.ca_bundle))
    yield endpoint
    endpoint.stop()


@pytest.fixture
def stocked(tmp_path, azurite_tls, identity):
    """A registry tree in a fresh container: two repositories sharing a layer, a deleted image
    (reclaimable), an unfinished upload, a root directory."""
    tree = StorageTree(tmp_path / "tree")
    shared = b"shared layer " * 300
    tree.image("team/app", [shared, b"app layer" * 50], tag="v1")
    tree.image("team/tool", [shared], tag="latest")
    gone, _, _ = tree.image("team/app", [b"old layer" * 80], tag="old")
    tree.unlink_revision("team/app", gone)
    tree.upload("team/app", b"half a layer")
    container = azurite_container(azurite_tls)
    upload_tree(container, tree.root, prefix="reg/")
    return container


def figures(result):
    data = result.as_dict()
    data.pop("duration_seconds")
    return data


def use_identity(settings, azurite_tls, container):
    azure_settings(
        settings,
        azurite_tls,
        container.container_name,
        root_directory="reg",
        AZURE_STORAGE_CREDENTIAL="default",
        AZURE_STORAGE_ACCOUNT_KEY="",
    )


@pytest.mark.django_db
def test_a_managed_identity_scans_with_the_same_figures_as_the_key(
    settings, azurite_tls, identity, stocked
):
    azure_settings(settings, azurite_tls, stocked.container_name, root_directory="reg")
    _, with_key = storage.scan_storage()
    assert with_key.blob_count == 9 and with_key.reclaimable_count == 3
    assert identity.requests == []

    use_identity(settings, azurite_tls, stocked)
    assert storage.configuration_problem() is None
    backend, with_identity = storage.scan_storage()
    assert backend.credential_kind == "default"
    assert figures(with_identity) == figures(with_key)
    # The chain reached the managed identity and asked for a storage token, once (cached).
    assert len(identity.requests) == 1
    query, header = identity.requests[0]
    assert header == IDENTITY_HEADER
    assert query["resource"] == ["https://storage.azure.com"]
    assert query["api-version"] == ["2019-08-01"]

    # The same through the command the operators run, with no key anywhere in the settings.
    assert not settings.AZURE_STORAGE_ACCOUNT_KEY and not settings.AZURE_STORAGE_CONNECTION_STRING
    call_command("scan_storage", "--json")


@pytest.mark.django_db
def test_azurite_checks_the_token_so_a_wrong_audience_is_refused(
    settings, azurite_tls, identity, stocked, caplog
):
    identity.audience = "https://management.azure.com"
    use_identity(settings, azurite_tls, stocked)
    with pytest.raises(storage.StorageError) as failure:
        storage.scan_storage()
    message = str(failure.value)
    assert "Azure rejected the credentials" in message
    assert "token of the portal's identity was refused" in message
    assert identity.tokens and all(token not in message for token in identity.tokens)
    assert all(token not in caplog.text for token in identity.tokens)


def test_a_managed_identity_moves_and_deletes_for_the_online_collector(
    settings, azurite_tls, identity, stocked
):
    """Batch sub-requests and server-side copies carry the identity's token too (Azurite
    checks each token's claims; it has no roles, so 'Contributor' is not checked here)."""
    use_identity(settings, azurite_tls, stocked)
    backend = storage.get_backend()
    blobs = sorted(path for path, _, _ in backend.list_entries("docker/registry/v2/blobs/"))
    trash = [f"oyster-trash/run-1/{path.rsplit('/', 2)[-2]}" for path in blobs]

    assert backend.move_objects(zip(blobs, trash, strict=True)) == len(blobs) == 9
    assert not any(backend.object_exists(path) for path in blobs)
    assert backend.delete_objects(trash) == 9
    backend.write_object("oyster-trash/marker", b"x")
    assert [path for path, _, _ in backend.list_entries("oyster-trash/")] == ["oyster-trash/marker"]
    assert identity.requests  # signed in through the identity, not a key


@pytest.mark.django_db
def test_no_managed_identity_is_one_sentence_naming_what_to_turn_on(
    settings, azurite_tls, identity, stocked, caplog
):
    identity.refuse = True
    use_identity(settings, azurite_tls, stocked)
    started = time.monotonic()
    with pytest.raises(storage.StorageError) as failure:
        storage.scan_storage()
    assert time.monotonic() - started < 60
    message = str(failure.value)
    assert "found no Azure identity" in message
    assert "managed identity" in message and "az login" in message
    # The chain's long report (every credential it tried) is for the log only.
    assert "ManagedIdentityCredential" not in message
    assert "azure identity: no token" in caplog.text


@pytest.mark.django_db
def test_a_sas_token_setting_scans_with_the_same_figures(settings, azurite, tmp_path):
    tree = StorageTree(tmp_path / "tree")
    tree.image("team/app", [b"layer" * 100], tag="v1")
    container = azurite_container(azurite)
    upload_tree(container, tree.root)
    azure_settings(settings, azurite, container.container_name)
    _, with_key = storage.scan_storage()
    sas = generate_container_sas(
        azurite.account_name,
        container.container_name,
        account_key=azurite.account_key,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1),
    )
    azure_settings(
        settings,
        azurite,
        container.container_name,
        AZURE_STORAGE_CREDENTIAL="sas",
        AZURE_STORAGE_SAS_TOKEN="?" + sas,
        AZURE_STORAGE_ACCOUNT_KEY="",
    )
    backend, with_sas = storage.scan_storage()
    assert backend.credential_kind == "sas"
    assert figures(with_sas) == figures(with_key)
    assert "sig=" not in backend.location


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"AZURE_STORAGE_CREDENTIAL": "password"}, "is not supported"),
        ({"AZURE_STORAGE_CREDENTIAL": "x" * 5000 + "\x00"}, "is not supported"),
        (
            {"AZURE_STORAGE_CREDENTIAL": "default", "AZURE_STORAGE_ACCOUNT_NAME": ""},
            "set AZURE_STORAGE_ACCOUNT_NAME",
        ),
        (
            {
                "AZURE_STORAGE_CREDENTIAL": "default",
                "AZURE_STORAGE_ACCOUNT_URL": "http://127.0.0.1:10000/devstoreaccount1",
            },
            "needs an https://",
        ),
        ({"AZURE_STORAGE_CREDENTIAL": "key", "AZURE_STORAGE_ACCOUNT_KEY": ""}, "ACCOUNT_KEY"),
        ({"AZURE_STORAGE_CREDENTIAL": "sas"}, "set AZURE_STORAGE_SAS_TOKEN"),
        ({"AZURE_STORAGE_CREDENTIAL": "connection_string"}, "CONNECTION_STRING"),
        ({"AZURE_STORAGE_ACCOUNT_KEY": ""}, "AZURE_STORAGE_CREDENTIAL=default"),
    ],
)
def test_credential_settings_that_cannot_work_are_named(settings, overrides, expected):
    settings.STORAGE_BACKEND = "azure"
    settings.AZURE_STORAGE_CONTAINER = "registry"
    settings.AZURE_STORAGE_CONNECTION_STRING = ""
    settings.AZURE_STORAGE_ACCOUNT_NAME = "account"
    settings.AZURE_STORAGE_ACCOUNT_KEY = "a2V5"
    settings.AZURE_STORAGE_ACCOUNT_URL = ""
    settings.AZURE_STORAGE_CREDENTIAL = ""
    settings.AZURE_STORAGE_SAS_TOKEN = ""
    for name, value in overrides.items():
        setattr(settings, name, value)
    problem = storage.configuration_problem()
    assert expected in problem and len(problem) < 400 and "\x00" not in problem
    with pytest.raises(storage.StorageError, match="AZURE_STORAGE"):
        storage.get_backend()
    errors = {error.id: error for error in checks.check_storage_settings(None)}
    assert expected in errors["oyster.E031"].msg


def test_default_needs_no_secret_and_builds_without_calling_anything(settings):
    settings.STORAGE_BACKEND = "azure"
    settings.AZURE_STORAGE_CONTAINER = "registry"
    settings.AZURE_STORAGE_CONNECTION_STRING = ""
    settings.AZURE_STORAGE_ACCOUNT_NAME = "account"
    settings.AZURE_STORAGE_ACCOUNT_KEY = ""
    settings.AZURE_STORAGE_ACCOUNT_URL = ""
    settings.AZURE_STORAGE_SAS_TOKEN = ""
    settings.AZURE_STORAGE_CREDENTIAL = "default"
    assert storage.configuration_problem() is None
    assert checks.check_storage_settings(None) == []
    backend = storage.get_backend()
    assert backend.location == "https://account.blob.core.windows.net/registry"


@pytest.mark.django_db
def test_a_hung_identity_endpoint_is_bounded_by_the_storage_timeout(
    settings, azurite_tls, identity, stocked, monkeypatch
):
    hung = threading.Event()

    def answer_never(*args, **kwargs):
        hung.wait(60)

    # The endpoint accepts the connection and never answers.
    monkeypatch.setattr(identity.server.RequestHandlerClass, "do_GET", answer_never)
    use_identity(settings, azurite_tls, stocked)
    settings.STORAGE_TIMEOUT = 2
    started = time.monotonic()
    try:
        with pytest.raises(storage.StorageError, match="found no Azure identity"):
            storage.scan_storage()
    finally:
        hung.set()
    assert time.monotonic() - started < 30


@pytest.mark.django_db
def test_the_storage_page_shows_the_identity_sentence_not_an_error_page(
    admin_client, settings, azurite_tls, identity, stocked
):
    identity.refuse = True
    use_identity(settings, azurite_tls, stocked)
    run = worker.run_now(Run.Kind.STORAGE_SCAN)
    assert run.state == Run.State.FAILED
    assert "found no Azure identity" in run.error
    page = admin_client.get(reverse("registry_admin:storage"))
    assert page.status_code == 200
    assert escape("The portal found no Azure identity to sign in with") in page.content.decode()
