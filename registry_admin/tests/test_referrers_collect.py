"""After an image and its referrers are deleted, the registry's collector frees their bytes
too, and the unrelated image still pulls completely. A registry of the module's own."""

from pathlib import Path

import pytest

from registry_admin import deletes, usage

from . import harness
from .images import sha256_digest
from .referrer_payloads import EMPTY_BLOB
from .test_free_space import collect_for_real, name, skopeo_pull
from .test_referrers import index_repository, push_signed_repository

pytestmark = pytest.mark.django_db(transaction=True)


@harness.live_fixture(scope="module")
def referrers_registry(live_server, tmp_path_factory):
    reg = harness.start_registry(tmp_path_factory.mktemp("referrers-gc"), live_server.url)
    yield reg
    reg.stop()


@pytest.fixture
def reg(referrers_registry, settings):
    """The module's registry; deletes free at once (no recycle bin), as in test_free_space."""
    if referrers_registry.process.poll() is not None:
        referrers_registry.restart()
    harness.registry_settings(settings, referrers_registry)
    settings.REGISTRY_GC_COMMAND = harness.REGISTRY_BINARY
    settings.RECYCLE_BIN_DAYS = 0
    yield referrers_registry
    harness.wait_for_quiet_notifications()


def blob_stored(reg, digest):
    hexpart = digest.split(":", 1)[1]
    blobs = Path(reg.storage_root) / "docker/registry/v2/blobs/sha256"
    return (blobs / hexpart[:2] / hexpart / "data").exists()


def test_the_collector_frees_the_referrers_bytes_with_the_image(reg, tmp_path):
    repo = name("signedgc")
    pushed = push_signed_repository(reg, repo)
    index_repository(repo)
    image_a, signature, sbom = pushed["a"], pushed["sig"], pushed["sbom"]
    own = [
        *(sha256_digest(b) for b in image_a.blobs),
        *(sha256_digest(b) for b in (*signature.blobs, *sbom.blobs) if b != EMPTY_BLOB),
        image_a.digest,
        signature.digest,
        sbom.digest,
        pushed["index"].digest,
    ]
    assert all(blob_stored(reg, digest) for digest in own)

    deletes.delete_tag("tester", repo, "1.0")
    after = usage.run_scan()
    result = collect_for_real(reg)

    assert result.freed_bytes == after.reclaimable_bytes
    assert [digest for digest in own if blob_stored(reg, digest)] == []
    skopeo_pull(reg, repo, "2.0", tmp_path / "b")
