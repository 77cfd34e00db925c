"""`manage.py check_registry_upgrade`: what breaks on distribution 3.x.

The storage side is real: Azurite holds a registry tree written the way 2.8's Azure driver
writes it (every link file a block blob: its PutContent calls CreateBlockBlobFromReader) next to
link files 3.x wrote (append blobs), and the command counts them through the real SDK. The 3.x
rules it applies are recorded from the source in distribution3/README.md.
"""

import base64
import json
from io import StringIO

import pytest
from azure.storage.blob import BlobType
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.management import CommandError, call_command

from registry_admin import upgrade

from .storage_trees import (
    V2,
    StorageTree,
    azure_settings,
    azurite_container,
    files_under,
    upload_tree,
)
from .test_storage_identity import write_tls_files

WRONG_KEY = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ=="


def run(*args):
    out, err = StringIO(), StringIO()
    try:
        call_command("check_registry_upgrade", *args, stdout=out, stderr=err)
        code = 0
    except CommandError as exc:
        code = exc.returncode
        err.write(str(exc))
    return code, out.getvalue(), err.getvalue()


def findings_of(*args):
    code, out, _ = run("--json", *args)
    return code, {finding["topic"]: finding for finding in json.loads(out)}


@pytest.fixture
def env_clean(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith(("REGISTRY_STORAGE", "REGISTRY_AUTH")):
            monkeypatch.delenv(name)


@pytest.fixture
def written_by_2_8(tmp_path, azurite, settings, env_clean):
    tree = StorageTree(tmp_path / "tree")
    tree.image("team/app", [b"layer" * 100], tag="v1")
    tree.image("team/app", [b"other" * 100], tag="v2")
    tree.image("tools/base", [b"base" * 100], tag="latest")
    links = sorted(path for path in files_under(tree.root) if path.endswith("/link"))
    container = azurite_container(azurite)
    upload_tree(container, tree.root)  # block blobs, as 2.8 wrote them
    # Two link files 3.x rewrote since: append blobs (its PutContent's "Always create as
    # AppendBlob"); they are not at risk.
    rewritten = [path for path in links if path.startswith(f"{V2}/repositories/tools/base/")][:2]
    for path in rewritten:
        container.delete_blob(path)
        container.upload_blob(path, (tree.root / path).read_bytes(), blob_type=BlobType.APPENDBLOB)
    azure_settings(settings, azurite, container.container_name)
    return container, len(links), len(links) - len(rewritten)


@pytest.mark.django_db
def test_a_2_8_azure_registry_lists_the_missing_credentials_type_and_the_block_blobs(
    written_by_2_8,
):
    _, total, blocks = written_by_2_8
    code, out, err = run()
    assert code == 1
    assert "thing(s) break on registry 3.x" in err
    lines = out.splitlines()
    assert any(line.startswith("BREAKS  azure credentials: ") for line in lines)
    assert 'invalid credentials type: ""' in out
    (blob_line,) = [line for line in lines if "azure blob types" in line]
    assert blob_line.startswith("BREAKS")
    assert f"{blocks:,} of {total:,} link files in 2 repositories are block blobs" in blob_line
    assert "409 InvalidBlobType" in blob_line and "#4871" in blob_line
    # Per image: config and layer links, the revision, the tag's current and index links.
    assert "(most: team/app 10, tools/base 3)" in blob_line
    assert "CHECK   config path: " in out and "/etc/distribution/config.yml" in out


@pytest.mark.django_db
def test_all_append_blobs_and_a_credentials_type_pass(written_by_2_8, tmp_path, monkeypatch):
    container, total, _ = written_by_2_8
    for blob in list(container.list_blobs(name_starts_with=f"{V2}/repositories/")):
        if blob.name.endswith("/link") and blob.blob_type == BlobType.BLOCKBLOB:
            data = container.download_blob(blob.name).readall()
            container.delete_blob(blob.name)
            container.upload_blob(blob.name, data, blob_type=BlobType.APPENDBLOB)
    monkeypatch.setenv("REGISTRY_STORAGE_AZURE_CREDENTIALS_TYPE", "default_credentials")
    code, findings = findings_of()
    assert code == 0
    assert findings["azure credentials"]["level"] == "ok"
    assert findings["azure blob types"]["level"] == "ok"
    assert f"None of the {total:,} link files" in findings["azure blob types"]["message"]


@pytest.mark.django_db
def test_a_storage_that_cannot_be_listed_is_a_check_not_a_crash(written_by_2_8, settings):
    settings.AZURE_STORAGE_ACCOUNT_KEY = WRONG_KEY
    code, findings = findings_of()
    finding = findings["azure blob types"]
    assert finding["level"] == "check"
    assert finding["message"].startswith("Could not list the storage: Azure rejected")
    assert WRONG_KEY not in json.dumps(findings)
    assert code == 1  # the credentials type still breaks


def write(tmp_path, text, name="config.yml"):
    path = tmp_path / name
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
    return str(path)


@pytest.mark.parametrize(
    ("storage", "env", "level"),
    [
        ("azure: {accountname: a, accountkey: k, container: c}", {}, "breaks"),
        ("azure: {accountname: a, container: c, credentials: {type: default}}", {}, "breaks"),
        ("azure: {accountname: a, container: c, credentials: {type: 7}}", {}, "breaks"),
        ("azure: {accountname: a, container: c, credentials: []}", {}, "breaks"),
        (
            "azure: {accountname: a, accountkey: k, container: c}",
            {"REGISTRY_STORAGE_AZURE_CREDENTIALS_TYPE": "shared_key"},
            "ok",
        ),
        (
            "azure: {accountname: a, container: c, credentials: {type: default_credentials}}",
            {},
            "ok",
        ),
        ("filesystem: {rootdirectory: /var/lib/registry}", {"REGISTRY_STORAGE": "azure"}, "breaks"),
    ],
)
def test_credentials_type_from_the_file_and_the_environment(
    tmp_path, monkeypatch, env_clean, settings, storage, env, level
):
    settings.STORAGE_BACKEND = "filesystem"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = write(tmp_path, f"version: 0.1\nstorage:\n  {storage}\n  delete: {{enabled: true}}\n")
    _, findings = findings_of("--config", path, "--skip-storage")
    assert findings["azure credentials"]["level"] == level
    assert "azure blob types" not in findings


def test_the_config_path_the_deletes_and_filesystem_storage(tmp_path, env_clean, settings):
    settings.STORAGE_BACKEND = "filesystem"
    settings.STORAGE_FILESYSTEM_ROOT = str(tmp_path)
    path = write(tmp_path, "version: 0.1\nstorage:\n  filesystem: {rootdirectory: /x}\n")
    code, findings = findings_of("--config", path)
    assert code == 0
    assert findings["config path"]["level"] == "check"
    assert path in findings["config path"]["message"]
    assert findings["deletes"]["level"] == "check" and "3.1.1" in findings["deletes"]["message"]
    assert findings["azure blob types"]["message"] == (
        "Storage is filesystem: no Azure blob types."
    )
    assert "azure credentials" not in findings and "token kid" not in findings


def _b64int(text):
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def test_the_kid_thumbprint_matches_rfc_7638s_own_example():
    # RFC 7638, section 3.1: this RSA key's thumbprint.
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
        "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    key = rsa.RSAPublicNumbers(_b64int("AQAB"), _b64int(n)).public_key()
    assert upgrade.jwk_thumbprint(key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_token_auth_lists_the_kid_3_x_will_accept(tmp_path, env_clean, settings):
    settings.STORAGE_BACKEND = "filesystem"
    cert_path, _ = write_tls_files(tmp_path)
    from cryptography import x509

    expected = upgrade.jwk_thumbprint(
        x509.load_pem_x509_certificate(cert_path.read_bytes()).public_key()
    )
    path = write(
        tmp_path,
        "version: 0.1\nauth:\n  token:\n    realm: https://portal.example/token\n"
        f"    service: registry\n    issuer: oyster\n    rootcertbundle: {cert_path}\n",
    )
    _, findings = findings_of("--config", path, "--skip-storage")
    finding = findings["token kid"]
    assert finding["level"] == "check"
    assert expected in finding["message"] and "RFC 7638" in finding["message"]
    with_jwks = write(tmp_path, "auth:\n  token: {jwks: /etc/registry/jwks.json}\n", "j.yml")
    _, findings = findings_of("--config", with_jwks, "--skip-storage")
    assert "/etc/registry/jwks.json" in findings["token kid"]["message"]
    missing = write(tmp_path, "auth:\n  token: {rootcertbundle: /nonexistent}\n", "m.yml")
    _, findings = findings_of("--config", missing, "--skip-storage")
    assert "could not be read here" in findings["token kid"]["message"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("storage: [unclosed", "not valid YAML (line 1)"),
        ("- a\n- b\n", "no mapping at the top"),
        ("", "no mapping at the top"),
        (b"\x00\xff\xfe" * 10, "not valid YAML"),
        ("a: " + "[" * 5000, "not valid YAML"),
        ("x: " + "y" * (1024 * 1024 + 10), "larger than 1 MiB"),
        ("&a [*a, *a]", "no mapping at the top"),
    ],
)
def test_malformed_configs_are_sentences(tmp_path, env_clean, content, message):
    path = write(tmp_path, content)
    code, _, err = run("--config", path, "--skip-storage")
    assert code == 1
    assert message in err
    assert "Traceback" not in err


def test_a_missing_config_is_a_sentence(tmp_path, env_clean):
    code, _, err = run("--config", str(tmp_path / "nope.yml"), "--skip-storage")
    assert code == 1 and "Cannot read" in err and "No such file" in err
