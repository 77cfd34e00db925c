"""RegistryClient.delete_tag / delete_image against the real registry (Debian's 2.8.2)."""

import hashlib
import json
import uuid

import pytest
import requests

from registry_admin.deletes import PLACEHOLDERS
from registry_admin.registry import (
    OCI_MANIFEST,
    RegistryClient,
    RegistryDeleteIncomplete,
    RegistryDeleteUnsupported,
    RegistryError,
    RegistryNotFound,
    RegistryTagMoved,
    RegistryUnreachable,
)

from . import harness
from .images import ALL_MANIFEST_TYPES, build_image, build_index


def unique_repo(prefix="del"):
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


def pull(reg, repo, reference):
    """Pull like a client would: the manifest, then every blob it names, each digest-checked.

    Returns the manifest digest; an index is pulled with all its children.
    """
    session = requests.Session()
    session.auth = (harness.PUSH_USER, harness.PUSH_PASSWORD)
    response = session.get(
        f"{reg.url}/v2/{repo}/manifests/{reference}",
        headers={"Accept": ALL_MANIFEST_TYPES},
        timeout=5,
    )
    assert response.status_code == 200, (repo, reference, response.status_code)
    digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
    manifest = json.loads(response.content)
    for child in manifest.get("manifests", []):
        pull(reg, repo, child["digest"])
    for blob in [manifest.get("config"), *manifest.get("layers", [])]:
        if blob is None:
            continue
        data = session.get(f"{reg.url}/v2/{repo}/blobs/{blob['digest']}", timeout=5).content
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob["digest"]
    return digest


def client_for(reg):
    return RegistryClient(reg.url, harness.SERVICE_USER, harness.SERVICE_PASSWORD, timeout=5)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["oci", "docker", "oci-index", "docker-list"])
def test_deleting_one_tag_keeps_its_siblings_pullable(registry, kind):
    image = {
        "oci": build_image,
        "docker": lambda: build_image(docker=True),
        "oci-index": build_index,
        "docker-list": lambda: build_index(docker=True),
    }[kind]()
    repo = unique_repo()
    pusher = registry.pusher()
    for tag in ("a", "b", "c"):
        pusher.push_image(repo, tag, image)

    deletion = client_for(registry).delete_tag(repo, "b")

    assert deletion.digest == image.digest
    assert deletion.method == "placeholder"
    assert deletion.placeholder_digest.startswith("sha256:")
    assert pusher.tags(repo) == ["a", "c"]
    assert pusher.head_manifest(repo, "b") is None
    assert pull(registry, repo, "a") == image.digest
    assert pull(registry, repo, "c") == image.digest
    # The placeholder is gone too: nothing but the image is left in the repository.
    assert pusher.head_manifest(repo, deletion.placeholder_digest) is None


@pytest.mark.django_db(transaction=True)
def test_skopeo_still_reads_the_sibling_tags(registry, skopeo):
    image = build_image()
    repo = unique_repo()
    pusher = registry.pusher()
    for tag in ("a", "b", "c"):
        pusher.push_image(repo, tag, image)
    client_for(registry).delete_tag(repo, "b")
    for tag in ("a", "c"):
        result = skopeo.inspect(repo, tag, harness.PUSH_USER, harness.PUSH_PASSWORD)
        assert result.returncode == 0, result.stderr
        assert "sha256:" + hashlib.sha256(result.stdout.encode()).hexdigest() == image.digest
    assert skopeo.inspect(repo, "b", harness.PUSH_USER, harness.PUSH_PASSWORD).returncode != 0


@pytest.mark.django_db(transaction=True)
def test_deleting_the_digest_removes_every_tag_on_it(registry):
    image, other = build_image(), build_image()
    repo = unique_repo()
    pusher = registry.pusher()
    for tag in ("a", "b", "c"):
        pusher.push_image(repo, tag, image)
    pusher.push_image(repo, "other", other)

    client_for(registry).delete_image(repo, image.digest)

    assert pusher.tags(repo) == ["other"]
    assert pull(registry, repo, "other") == other.digest
    with pytest.raises(RegistryNotFound):
        client_for(registry).delete_image(repo, image.digest)


@pytest.mark.django_db(transaction=True)
def test_a_missing_tag_is_not_found_and_changes_nothing(registry):
    repo = unique_repo()
    image = build_image()
    registry.pusher().push_image(repo, "a", image)
    with pytest.raises(RegistryNotFound):
        client_for(registry).delete_tag(repo, "nope")
    assert registry.pusher().tags(repo) == ["a"]


@pytest.mark.django_db(transaction=True)
def test_a_tag_pushed_again_since_the_page_was_shown_is_not_deleted(registry):
    repo = unique_repo()
    old, new = build_image(), build_image()
    pusher = registry.pusher()
    pusher.push_image(repo, "a", old)
    pusher.push_image(repo, "a", new)
    with pytest.raises(RegistryTagMoved, match="Nothing was deleted"):
        client_for(registry).delete_tag(repo, "a", expected_digest=old.digest)
    assert pusher.head_manifest(repo, "a") == new.digest
    assert client_for(registry).delete_tag(repo, "a", expected_digest=new.digest).digest == (
        new.digest
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "repo,ref",
    [
        ("../../v2/_catalog", "a"),
        ("team/app", "../b"),
        ("team/app", "<script>alert(1)</script>"),
        ("team/app", "x" * 129),
        ("team/app", "a\nb"),
        ("Team/App", "a"),
        ("team/app", "sha256:" + "a" * 64),
    ],
)
def test_hostile_names_never_reach_the_registry(registry, repo, ref):
    client = client_for(registry)
    sent = []
    client.session.hooks["response"].append(lambda r, **kw: sent.append(r.request.url))
    with pytest.raises(RegistryNotFound):
        client.delete_tag(repo, ref)
    assert sent == []


@pytest.mark.django_db(transaction=True)
def test_a_failure_after_repointing_says_where_the_tag_is_and_a_retry_finishes(registry):
    """Fault injection at the client's transport boundary: the placeholder DELETE fails once."""
    image = build_image()
    repo = unique_repo()
    pusher = registry.pusher()
    for tag in ("a", "b"):
        pusher.push_image(repo, tag, image)
    client = client_for(registry)
    real_request = client.request

    def failing_placeholder_delete(method, path, **kwargs):
        if method == "DELETE" and path.endswith(tuple(placeholders)):
            raise RegistryUnreachable("The registry at test is unreachable (injected).")
        return real_request(method, path, **kwargs)

    placeholders = []
    real_put = client._placeholder_manifest

    def remember_placeholder(*args):
        body = real_put(*args)
        placeholders.append("sha256:" + hashlib.sha256(body).hexdigest())
        return body

    client._placeholder_manifest = remember_placeholder
    client.request = failing_placeholder_delete
    with pytest.raises(RegistryDeleteIncomplete) as failure:
        client.delete_tag(repo, "b", placeholders=PLACEHOLDERS)
    placeholder = placeholders[0]
    message = str(failure.value)
    assert f"{repo}:b now points at placeholder {placeholder}" in message
    assert "Retry" in message
    assert pusher.head_manifest(repo, "b") == placeholder
    assert pull(registry, repo, "a") == image.digest

    # A new client (no injected fault) finishes the job and reports the original image.
    deletion = client_for(registry).delete_tag(
        repo, "b", expected_digest=image.digest, placeholders=PLACEHOLDERS
    )
    assert deletion.placeholder_digest == placeholder
    assert deletion.digest == image.digest
    assert pusher.tags(repo) == ["a"]
    assert pull(registry, repo, "a") == image.digest


@pytest.mark.django_db(transaction=True)
def test_an_index_without_local_children_gets_an_empty_config_blob(registry):
    """An index whose children live elsewhere (not in this repository) still untags alone."""
    index = build_index()
    repo, other = unique_repo(), unique_repo()
    pusher = registry.pusher()
    pusher.push_image(repo, "a", index)
    pusher.push_image(repo, "b", index)
    # Remove the children from this repository: the index no longer has a config to borrow.
    client = client_for(registry)
    for child in index.children:
        pusher.push_image(other, child.digest, child)
        client.delete_image(repo, child.digest)
    deletion = client.delete_tag(repo, "b")
    assert deletion.method == "placeholder"
    assert pusher.tags(repo) == ["a"]
    assert pusher.head_manifest(repo, "a") == index.digest


@pytest.fixture
def no_delete_registry(live_server, tmp_path, settings):
    reg = harness.start_registry(tmp_path, live_server.url, delete_enabled=False)
    harness.registry_settings(settings, reg)
    yield reg
    reg.stop()


@pytest.mark.django_db(transaction=True)
def test_with_deletes_disabled_nothing_changes_and_the_message_says_what_to_set(
    no_delete_registry,
):
    image = build_image()
    pusher = no_delete_registry.pusher()
    for tag in ("a", "b"):
        pusher.push_image("team/app", tag, image)
    client = client_for(no_delete_registry)

    with pytest.raises(RegistryDeleteUnsupported) as failure:
        client.delete_tag("team/app", "b")
    assert "REGISTRY_STORAGE_DELETE_ENABLED=true" in str(failure.value)
    assert "Nothing was changed" in str(failure.value)
    assert pusher.tags("team/app") == ["a", "b"]
    assert pusher.head_manifest("team/app", "b") == image.digest

    with pytest.raises(RegistryDeleteUnsupported):
        client.delete_image("team/app", image.digest)
    with pytest.raises(RegistryDeleteUnsupported):
        client.delete_tag("team/app", "a")
    assert pusher.tags("team/app") == ["a", "b"]
    assert pusher.head_manifest("team/app", "b") == image.digest


def test_an_unreachable_registry_is_a_readable_error():
    client = RegistryClient(f"http://127.0.0.1:{harness.free_port()}", "u", "p", timeout=1)
    with pytest.raises(RegistryError, match="unreachable"):
        client.delete_tag("team/app", "a")
    with pytest.raises(RegistryError, match="may or may not have happened"):
        client.delete_image("team/app", "sha256:" + "a" * 64)


class _V3Registry(harness.QuietHandler):
    """Distribution v3's answers to a tag delete (202, untag only).

    v3 cannot be installed on this machine (Debian ships 2.8.2), so this small stand-in serves
    the two requests the client makes; everything else about deletes is tested on the real 2.8.
    """

    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode()
    requests_seen: list = []

    def do_GET(self):
        self.requests_seen.append(("GET", self.path))
        digest = "sha256:" + hashlib.sha256(self.manifest).hexdigest()
        self.answer(
            200, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": digest}, self.manifest
        )

    def do_DELETE(self):
        self.requests_seen.append(("DELETE", self.path))
        self.answer(202, {})


def test_distribution_v3_untags_with_one_delete():
    _V3Registry.requests_seen = []
    with harness.serving(_V3Registry) as server:
        deletion = RegistryClient(server.url, timeout=2).delete_tag("team/app", "b")
    assert deletion.method == "untag"
    assert _V3Registry.requests_seen == [
        ("GET", "/v2/team/app/manifests/b"),
        ("DELETE", "/v2/team/app/manifests/b"),
    ]
