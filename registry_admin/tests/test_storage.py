"""registry_admin.storage: the scan's arithmetic on hand-written registry trees, the filesystem
walk, the manifest-reference cache, and the Azure backend against Azurite (real SDK)."""

import json
import os
import sys
import time

import pytest

from registry_admin import storage, usage
from registry_admin.models import ManifestReferences
from registry_admin.tests.harness import free_port
from registry_admin.tests.storage_trees import (
    DictCache,
    StorageTree,
    azure_settings,
    azurite_container,
    hex_of,
    upload_tree,
)

V2 = "docker/registry/v2"


def scan_dir(root, **options):
    backend = storage.FilesystemStorage(root)
    return storage.scan(backend.list_entries(storage.V2_PREFIX), backend.read, **options)


def by_name(result):
    return {r.name: r for r in result.repositories}


@pytest.fixture
def tree(tmp_path):
    return StorageTree(tmp_path / "storage")


def test_figures_follow_links_and_gc_marking(tree):
    base, own, other = b"B" * 1000, b"O" * 300, b"X" * 70
    _, kept_manifest, kept_config = tree.image("team/app", [base, own], tag="v1")
    gone, gone_manifest, gone_config = tree.image("team/app", [base, b"G" * 555], tag="v2")
    tree.unlink_revision("team/app", gone)  # the registry's DELETE by digest does this
    tree.image("tool", [base, other], tag="latest")
    tree.blob(b"never linked anywhere")

    result = scan_dir(tree.root)

    sizes = {
        name: len(data)
        for name, data in {
            "base": base,
            "own": own,
            "other": other,
            "kept_manifest": kept_manifest,
            "kept_config": kept_config,
            "gone_manifest": gone_manifest,
            "gone_config": gone_config,
        }.items()
    }
    total = sum(len(p.read_bytes()) for p in tree.root.rglob("data"))
    assert result.total_bytes == total
    assert result.blob_count == 11
    # Reclaimable: the deleted image's manifest, config and own layer, and the stray blob.
    assert result.reclaimable_bytes == (
        sizes["gone_manifest"] + sizes["gone_config"] + 555 + len(b"never linked anywhere")
    )
    assert result.reclaimable_count == 4
    app = by_name(result)["team/app"]
    assert (
        app.referenced_bytes
        == (sizes["base"] + sizes["own"] + sizes["kept_manifest"] + sizes["kept_config"])
        + sizes["gone_config"]
        + 555
    )
    assert app.shared_bytes == sizes["base"]
    assert app.unique_bytes == app.referenced_bytes - sizes["base"]
    assert app.reclaimable_bytes == sizes["gone_config"] + 555
    assert app.manifest_count == 1
    assert by_name(result)["tool"].shared_bytes == sizes["base"]
    assert result.manifest_count == 2


def test_an_index_marks_its_children_but_not_their_layers(tree):
    """GC marks an index's child manifests; their layers only through their own revisions."""
    child, child_manifest, child_config = tree.image("multi", [b"child layer" * 10])
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"digest": f"sha256:{child}", "size": len(child_manifest)}],
        }
    ).encode()
    index_digest = tree.blob(index)
    tree.link_revision("multi", index_digest, tag="latest")
    tree.unlink_revision("multi", child)

    result = scan_dir(tree.root)

    # The child manifest stays (the index names it); its config and layer do not.
    assert result.reclaimable_bytes == len(child_config) + len(b"child layer" * 10)
    assert result.manifest_count == 1


def test_schema1_manifests_mark_their_fs_layers(tree):
    layer = tree.blob(b"schema1 layer")
    tree.link_layer("old", layer)
    manifest = json.dumps(
        {"schemaVersion": 1, "name": "old", "fsLayers": [{"blobSum": f"sha256:{layer}"}]}
    ).encode()
    tree.link_revision("old", tree.blob(manifest), tag="v1")

    assert scan_dir(tree.root).reclaimable_bytes == 0


def test_junk_is_skipped_and_counted_not_fatal(tree):
    tree.image("good", [b"layer"])
    not_a_manifest = tree.blob(b"\xff\xfe not json")
    tree.link_revision("good", not_a_manifest)
    for junk in [
        f"{V2}/repositories/<script>alert(1)</script>/_layers/sha256/{'a' * 64}/link",
        f"{V2}/repositories/UPPER/_layers/sha256/{'a' * 64}/link",
        f"{V2}/repositories/{'x/' * 150}_layers/sha256/{'a' * 64}/link",  # name > 255
        f"{V2}/repositories/a'; DROP TABLE x;--/_layers/sha256/{'a' * 64}/link",
        f"{V2}/repositories/ünïcode/_layers/sha256/{'a' * 64}/link",
        f"{V2}/repositories/good/_layers/sha256/not-hex/link",
        f"{V2}/repositories/good/_layers/sha256/{'g' * 64}/link",
        f"{V2}/blobs/sha256/zz/{'z' * 64}/data",
        f"{V2}/blobs/sha256/ab/{'cd' * 32}/data",  # prefix directory does not match
        f"{V2}/blobs/sha256/aa/{'a' * 63} /data",
        f"{V2}/somewhere-else/file",
    ]:
        tree.write(junk, b"junk")

    result = scan_dir(tree.root)

    assert [r.name for r in result.repositories] == ["good"]
    assert result.skipped_entries == 11
    assert result.unreadable_manifests == 1
    assert (
        result.total_bytes
        == sum(p.stat().st_size for p in (tree.root / V2 / "blobs").rglob("data")) - 4 * 3
    )  # the three junk blob paths are not blobs


def test_link_to_a_missing_blob_is_counted(tree):
    tree.link_layer("app", "ab" * 32)
    tree.link_revision("app", "cd" * 32)

    result = scan_dir(tree.root)

    assert result.missing_blob_links == 2
    assert result.blob_count == 0
    assert result.manifests_read == 0


def test_listing_order_does_not_change_the_figures(tree):
    for number in range(40):
        tree.image(f"repo{number % 3}", [b"shared", f"own {number}".encode() * 50])
    backend = storage.FilesystemStorage(tree.root)
    entries = list(backend.list_entries(storage.V2_PREFIX))
    assert entries == sorted(entries)  # the walk yields sorted paths, blobs first

    in_order = storage.scan(iter(entries), backend.read)
    reversed_order = storage.scan(reversed(entries), backend.read, read_concurrency=3)

    assert in_order.as_dict() | {"duration_seconds": 0} == reversed_order.as_dict() | {
        "duration_seconds": 0
    }


def test_uploads_are_counted_with_their_oldest_start(tree):
    tree.image("app", [b"x"])
    tree.upload("app", b"a" * 100)
    old = tree.upload("other", b"b" * 10)
    old_file = tree.root / V2 / "repositories/other/_uploads" / old / "startedat"
    os.utime(old_file, (1_600_000_000, 1_600_000_000))

    result = scan_dir(tree.root)

    assert result.upload_count == 2
    assert result.upload_bytes == 100 + 10 + 2 * len(b"2026-01-01T00:00:00Z")
    assert result.oldest_upload_started == 1_600_000_000


def test_the_cache_spares_manifest_reads_and_forgets_unlinked_manifests(tree):
    first_digest, _, _ = tree.image("app", [b"one"])
    second_digest, _, _ = tree.image("app", [b"two"])
    cache = DictCache()

    cold = scan_dir(tree.root, cache=cache)
    warm = scan_dir(tree.root, cache=cache)
    tree.unlink_revision("app", second_digest)
    after_delete = scan_dir(tree.root, cache=cache)

    assert (cold.manifests_read, warm.manifests_read) == (2, 0)
    assert cold.as_dict() | {"duration_seconds": 0, "manifests_read": 0} == warm.as_dict() | {
        "duration_seconds": 0
    }
    assert set(cache.known) == {bytes.fromhex(first_digest)}
    assert after_delete.reclaimable_count == 3


def test_a_cached_manifest_whose_blob_is_gone_marks_nothing(tree):
    digest, manifest, _ = tree.image("app", [b"layer"])
    cache = DictCache()
    scan_dir(tree.root, cache=cache)
    (tree.root / V2 / "blobs/sha256" / digest[:2] / digest / "data").unlink()

    result = scan_dir(tree.root, cache=cache)

    # GC skips a revision whose blob is missing: its config and layer are reclaimable.
    assert result.reclaimable_count == 2
    assert result.missing_blob_links == 1


@pytest.mark.django_db
def test_the_database_cache_round_trips(tree):
    tree.image("app", [b"one", b"two"])
    cache = usage.ManifestReferenceCache()

    cold = scan_dir(tree.root, cache=cache)
    warm = scan_dir(tree.root, cache=cache)

    assert (cold.manifests_read, warm.manifests_read) == (1, 0)
    assert warm.reclaimable_count == cold.reclaimable_count == 0
    (row,) = ManifestReferences.objects.all()
    assert len(bytes(row.references)) == 3 * 32  # config + two layers
    ManifestReferences.objects.create(digest="ef" * 32, references=b"")
    scan_dir(tree.root, cache=cache)
    assert ManifestReferences.objects.count() == 1


def test_manifest_references_reads_every_kind():
    layer, config = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert storage.manifest_references(
        json.dumps({"config": {"digest": config}, "layers": [{"digest": layer}]})
    ) == [config, layer]
    assert storage.manifest_references(json.dumps({"manifests": [{"digest": layer}]})) == [layer]
    assert storage.manifest_references(json.dumps({"fsLayers": [{"blobSum": layer}]})) == [layer]
    assert storage.manifest_references(b"[1, 2]") is None
    assert storage.manifest_references(b"\x00\xff") is None
    assert storage.manifest_references(json.dumps({"layers": [1, {"digest": 5}]})) == []


def test_an_oversized_manifest_is_unreadable(tree):
    huge = b'{"layers": [' + b" " * storage.MANIFEST_MAX_BYTES + b"]}"
    tree.link_revision("app", tree.blob(huge))

    result = scan_dir(tree.root)

    assert result.unreadable_manifests == 1
    assert result.reclaimable_count == 0  # the manifest itself is still linked


def test_filesystem_errors_are_sentences(tmp_path):
    missing = storage.FilesystemStorage(tmp_path / "nowhere")
    with pytest.raises(storage.StorageError, match="does not exist: set STORAGE_FILESYSTEM_ROOT"):
        list(missing.list_entries(storage.V2_PREFIX))
    empty = storage.FilesystemStorage(tmp_path)
    assert list(empty.list_entries(storage.V2_PREFIX)) == []
    with pytest.raises(storage.StorageError, match="outside the storage root"):
        empty.read("../etc/passwd", 10)
    assert empty.read("docker/registry/v2/nothing", 10) is None


def test_get_backend_follows_the_settings(settings, tmp_path):
    settings.STORAGE_BACKEND = "filesystem"
    settings.STORAGE_FILESYSTEM_ROOT = str(tmp_path)
    assert storage.get_backend().location == str(tmp_path)
    settings.STORAGE_BACKEND = "s3"
    with pytest.raises(storage.StorageError, match="not supported"):
        storage.get_backend()
    assert "not supported" in storage.configuration_problem()


def test_azure_lists_under_the_root_directory_and_reads(tree, azurite, settings):
    tree.image("app", [b"layer"], tag="v1")
    container = azurite_container(azurite)
    upload_tree(container, tree.root, prefix="deep/root/")
    container.upload_blob("deep/root/docker/registry/v2/empty", b"")
    container.upload_blob("elsewhere/docker/registry/v2/blobs/x", b"not ours")
    azure_settings(settings, azurite, container.container_name, root_directory="deep/root")
    backend = storage.get_backend()

    listed = list(backend.list_entries(storage.V2_PREFIX))
    on_disk = list(storage.FilesystemStorage(tree.root).list_entries(storage.V2_PREFIX))

    assert [(p, s) for p, s, _ in listed] == sorted(
        [(p, s) for p, s, _ in on_disk] + [("docker/registry/v2/empty", 0)]
    )
    assert backend.read("docker/registry/v2/empty", 10) == b""
    assert backend.read("docker/registry/v2/missing", 10) is None
    path = listed[0][0]
    assert backend.read(path, 4) == (tree.root / path).read_bytes()[:5]
    assert azurite.account_key not in backend.location


def test_azure_connection_string_and_missing_credentials(azurite, settings):
    container = azurite_container(azurite)
    container.upload_blob(f"{V2}/blobs/sha256/{hex_of(b'x')[:2]}/{hex_of(b'x')}/data", b"x")
    azure_settings(
        settings,
        azurite,
        container.container_name,
        AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
        AZURE_STORAGE_ACCOUNT_KEY="",
    )
    _, result = storage.scan_storage()
    assert (result.total_bytes, result.blob_count) == (1, 1)

    settings.AZURE_STORAGE_CONNECTION_STRING = ""
    assert "AZURE_STORAGE_ACCOUNT_KEY" in storage.configuration_problem()
    with pytest.raises(storage.StorageError, match="AZURE_STORAGE_ACCOUNT_KEY"):
        storage.get_backend()
    settings.AZURE_STORAGE_CONTAINER = ""
    with pytest.raises(storage.StorageError, match="AZURE_STORAGE_CONTAINER"):
        storage.get_backend()


class CountingRead:
    """A backend's `read`, recording the tag links it was asked for."""

    def __init__(self, read):
        self.read, self.tag_links = read, []

    def __call__(self, path, max_bytes):
        if path.endswith("/current/link"):
            self.tag_links.append(path)
        return self.read(path, max_bytes)


def move_tag(tree, repository, tag, digest):
    """What distribution's tagStore.Tag() does: index entry first, then the current link."""
    base = f"{V2}/repositories/{repository}/_manifests/tags/{tag}"
    tree.write(f"{base}/index/sha256/{digest}/link", f"sha256:{digest}".encode())
    tree.write(f"{base}/current/link", f"sha256:{digest}".encode())


def untagged_digests(result):
    return {(u.repository, u.digest) for u in result.untagged}


def test_only_moved_tags_have_their_current_link_read(tree):
    tree.image("app", [b"a"], tag="v1")
    old, _, _ = tree.image("app", [b"old"], tag="latest")
    new, _, _ = tree.image("app", [b"new"])
    move_tag(tree, "app", "latest", new)
    back, _, _ = tree.image("tool", [b"t1"], tag="stable")
    ahead, _, _ = tree.image("tool", [b"t2"])
    move_tag(tree, "tool", "stable", ahead)
    move_tag(tree, "tool", "stable", back)  # moved back: two index entries, current is the first
    backend = storage.FilesystemStorage(tree.root)

    results = []
    for concurrency in (1, 4):
        read = CountingRead(backend.read)
        results.append(
            storage.scan(
                backend.list_entries(storage.V2_PREFIX), read, read_concurrency=concurrency
            )
        )
        assert sorted(read.tag_links) == [
            f"{V2}/repositories/app/_manifests/tags/latest/current/link",
            f"{V2}/repositories/tool/_manifests/tags/stable/current/link",
        ]

    assert untagged_digests(results[0]) == {("app", f"sha256:{old}"), ("tool", f"sha256:{ahead}")}
    sequential, concurrent = (r.as_dict() | {"duration_seconds": 0} for r in results)
    assert sequential == concurrent


def test_a_tag_without_current_link_points_nowhere_and_one_without_index_is_read(tree):
    orphan, _, _ = tree.image("app", [b"a"], tag="gone")
    (tree.root / f"{V2}/repositories/app/_manifests/tags/gone/current/link").unlink()
    bare, _, _ = tree.image("app", [b"b"])
    tree.write(
        f"{V2}/repositories/app/_manifests/tags/bare/current/link", f"sha256:{bare}".encode()
    )
    junk, _, _ = tree.image("app", [b"c"], tag="junk")
    tree.write(f"{V2}/repositories/app/_manifests/tags/junk/index/sha512/{'0' * 128}/link", b"x")
    backend = storage.FilesystemStorage(tree.root)
    read = CountingRead(backend.read)

    result = storage.scan(backend.list_entries(storage.V2_PREFIX), read, read_concurrency=2)

    assert untagged_digests(result) == {("app", f"sha256:{orphan}")}
    assert sorted(read.tag_links) == [
        f"{V2}/repositories/app/_manifests/tags/bare/current/link",
        f"{V2}/repositories/app/_manifests/tags/junk/current/link",
    ]


def test_a_tag_split_by_an_unsorted_listing_never_turns_its_image_untagged(tree):
    old, _, _ = tree.image("app", [b"old"], tag="latest")
    new, _, _ = tree.image("app", [b"new"])
    move_tag(tree, "app", "latest", new)
    tree.image("tool", [b"t"], tag="v1")
    backend = storage.FilesystemStorage(tree.root)
    entries = list(backend.list_entries(storage.V2_PREFIX))
    # The current link and the old index entry first (alone, they would say "old"); the
    # entry naming the current digest after another repository's tag.
    split = next(e for e in entries if e[0].endswith(f"latest/index/sha256/{new}/link"))
    entries.remove(split)
    entries.append(split)

    result = storage.scan(iter(entries), backend.read)

    assert ("app", f"sha256:{new}") not in untagged_digests(result)


def test_tag_links_are_read_while_the_listing_goes_on(tree):
    for number in range(20):
        first, _, _ = tree.image(f"repo{number:02d}", [b"a%d" % number], tag="latest")
        second, _, _ = tree.image(f"repo{number:02d}", [b"b%d" % number])
        move_tag(tree, f"repo{number:02d}", "latest", second)
    backend = storage.FilesystemStorage(tree.root)
    read = CountingRead(backend.read)
    entries = list(backend.list_entries(storage.V2_PREFIX))
    read_before_the_end = []

    def listing():
        yield from entries[:-1]
        read_before_the_end.append(len(read.tag_links))
        yield entries[-1]

    result = storage.scan(listing(), read, read_concurrency=2)

    # At most 4 x 2 reads wait in the pool; the other 12 of 20 were done before the end.
    assert read_before_the_end[0] >= 12
    assert len(read.tag_links) == 20
    assert len(result.untagged) == 20


def test_azure_listing_goes_page_by_page_in_order_and_reports_a_failure(tree, azurite, settings):
    for number in range(4):
        tree.image(f"app{number}", [b"layer %d" % number], tag="v1")
    container = azurite_container(azurite)
    upload_tree(container, tree.root)
    azure_settings(settings, azurite, container.container_name)
    backend = storage.get_backend()
    on_disk = list(storage.FilesystemStorage(tree.root).list_entries(storage.V2_PREFIX))
    assert len(on_disk) > 12

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("registry_admin.storage.backends.AZURE_PAGE_SIZE", 3)
        listed = list(backend.list_entries(storage.V2_PREFIX))
        assert [(p, s) for p, s, _ in listed] == [(p, s) for p, s, _ in on_disk]

        entries = backend.list_entries(storage.V2_PREFIX)
        next(entries)
        container.delete_container()  # page 2 has not been asked for yet
        with pytest.raises(storage.StorageError, match="does not exist"):
            list(entries)


def names_only(entries):
    """A listing like Azure's scan listing: a repository's entries without size or time."""
    for path, size, modified in entries:
        if path.startswith(f"{V2}/repositories/"):
            yield path, None, None
        else:
            yield path, size, modified


def registry_with_untagged_revisions_and_uploads(tree):
    tree.image("app", [b"a"], tag="v1")
    old, _, _ = tree.image("app", [b"old"], tag="latest")
    new, _, _ = tree.image("app", [b"new"])
    move_tag(tree, "app", "latest", new)
    tree.image("app", [b"never tagged"])
    tree.image("tool", [b"t"], tag="stable")
    tree.image("quiet", [b"q"], tag="v1")
    tree.upload("tool", b"u" * 100)
    tree.upload("tool", b"v" * 7)
    old_link = tree.root / f"{V2}/repositories/app/_manifests/revisions/sha256/{old}/link"
    os.utime(old_link, (1_600_000_000, 1_600_000_000))
    return old


def scans_full_and_by_name(tree, concurrency):
    """`tree` scanned from a full listing and from a names-only one, and the directories the
    latter listed with sizes and times."""
    backend = storage.FilesystemStorage(tree.root)
    detailed = []

    def details(prefix):
        detailed.append(prefix)
        return backend.list_entries(prefix)

    full = storage.scan(backend.list_entries(storage.V2_PREFIX), backend.read)
    names = storage.scan(
        names_only(backend.list_entries(storage.V2_PREFIX)),
        backend.read,
        read_concurrency=concurrency,
        details=details,
    )
    return full, names, detailed


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_names_only_listing_gives_the_figures_of_a_full_one(tree, concurrency):
    """Sizes and times are listed only where they are needed (a repository's uploads, the
    revisions of one with untagged revisions), and the figures are those of a full listing."""
    old = registry_with_untagged_revisions_and_uploads(tree)
    full, names, detailed = scans_full_and_by_name(tree, concurrency)

    assert names.as_dict() | {"duration_seconds": 0} == full.as_dict() | {"duration_seconds": 0}
    assert sorted(detailed) == [
        f"{V2}/repositories/app/_manifests/revisions/sha256/",
        f"{V2}/repositories/tool/_uploads/",
    ]
    assert len(full.untagged) == 2 and all(u.linked_at for u in full.untagged)
    assert {u.digest: u.linked_at for u in names.untagged}[f"sha256:{old}"] == 1_600_000_000
    assert (names.upload_count, names.upload_bytes) == (2, 107 + 2 * len(b"2026-01-01T00:00:00Z"))


def test_a_revision_gone_before_its_details_has_no_link_time(tree):
    """Removed between the listing and the details listing: no time, never a made-up one (an
    untagged revision without a time is never old enough for a retention rule)."""
    old = registry_with_untagged_revisions_and_uploads(tree)
    backend = storage.FilesystemStorage(tree.root)
    entries = list(names_only(backend.list_entries(storage.V2_PREFIX)))
    tree.unlink_revision("app", old)

    result = storage.scan(iter(entries), backend.read, details=backend.list_entries)

    assert {u.digest: u.linked_at for u in result.untagged}[f"sha256:{old}"] is None


def test_a_names_only_listing_without_details_is_refused(tree):
    registry_with_untagged_revisions_and_uploads(tree)
    backend = storage.FilesystemStorage(tree.root)
    with pytest.raises(ValueError, match="details"):
        storage.scan(names_only(backend.list_entries(storage.V2_PREFIX)), backend.read)


def test_azure_scans_by_names_and_gives_the_filesystem_figures(tree, azurite, settings):
    """Against Azurite: the scan's listing names the repositories' objects and sizes only the
    blobs; the figures are the filesystem backend's on the same tree, link times included
    (Azure's own: the upload time)."""
    registry_with_untagged_revisions_and_uploads(tree)
    container = azurite_container(azurite)
    started = time.time()
    upload_tree(container, tree.root, prefix="root/")
    azure_settings(settings, azurite, container.container_name, root_directory="root")
    on_disk = storage.FilesystemStorage(tree.root)

    listed = list(storage.get_backend().scan_entries())
    _, azure = storage.scan_storage()
    local = storage.scan(on_disk.list_entries(storage.V2_PREFIX), on_disk.read)

    repositories = [e for e in listed if e[0].startswith(f"{V2}/repositories/")]
    blobs = [e for e in listed if e[0].startswith(f"{V2}/blobs/")]
    assert len(repositories) + len(blobs) == len(listed) == local.entry_count
    assert {(size, modified) for _, size, modified in repositories} == {(None, None)}
    assert all(size is not None for _, size, _ in blobs)

    def without_times(result):
        figures = result.as_dict() | {"duration_seconds": 0, "oldest_upload_started": 0}
        figures["untagged"] = [u | {"linked_at": 0} for u in figures["untagged"]]
        return figures

    assert without_times(azure) == without_times(local)
    assert len(azure.untagged) == 2
    assert all(started - 60 < u.linked_at < time.time() + 60 for u in azure.untagged)
    assert started - 60 < azure.oldest_upload_started < time.time() + 60


def test_azure_keeps_the_environment_proxy_settings(tree, azurite, settings, monkeypatch):
    """The client reads requests' environment settings once instead of at every request: a
    proxy in HTTP_PROXY is still used (one that does not answer fails the listing) and
    NO_PROXY still exempts the storage endpoint."""
    tree.image("app", [b"layer"], tag="v1")
    container = azurite_container(azurite)
    upload_tree(container, tree.root)
    azure_settings(settings, azurite, container.container_name, STORAGE_TIMEOUT=2)
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert list(storage.get_backend().list_entries(storage.V2_PREFIX))

    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(storage.StorageError, match="Could not connect"):
        list(storage.get_backend().list_entries(storage.V2_PREFIX))

    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert list(storage.get_backend().list_entries(storage.V2_PREFIX))


def test_many_directories_to_detail_take_one_listing_of_the_repositories(tree, monkeypatch):
    """With more directories to detail than a listing request is worth, one listing of every
    repository's objects replaces them (never much dearer than listing with sizes at once)."""
    registry_with_untagged_revisions_and_uploads(tree)
    # The module, not the `scan` function the package exports under the same name.
    scan_module = sys.modules["registry_admin.storage.scan"]
    monkeypatch.setattr(scan_module, "DIRECTORY_LISTING_COST", 10**6)
    full, names, detailed = scans_full_and_by_name(tree, concurrency=4)

    assert names.as_dict() | {"duration_seconds": 0} == full.as_dict() | {"duration_seconds": 0}
    assert detailed == [f"{V2}/repositories/", f"{V2}/repositories/"]  # uploads, then times


def public_listing(backend, prefix):
    """list_entries as the SDK's public list_blobs gives it (the reference)."""
    return [
        (blob.name[len(backend.prefix) :], blob.size, blob.last_modified.timestamp())
        for blob in backend.client.list_blobs(name_starts_with=backend.prefix + prefix)
    ]


def test_azure_reads_sizes_and_times_from_the_listing_as_list_blobs_does(
    tree, azurite, settings, monkeypatch
):
    """The scan's listing reads the XML pages itself (the SDK's deserialisation is most of a
    scan's CPU): every path, size and time must be what list_blobs says, over several pages,
    with odd names, and without calling list_blobs at all."""
    tree.image("app", [b"layer one", b"layer two"], tag="v1")
    container = azurite_container(azurite)
    upload_tree(container, tree.root, prefix="root/")
    odd = ["a b/ü%20é", "spaces and + plus", "empty"]
    for name in odd:
        container.upload_blob(f"root/{V2}/{name}", b"" if name == "empty" else name.encode())
    azure_settings(settings, azurite, container.container_name, root_directory="root")
    backend = storage.get_backend()
    expected = public_listing(backend, storage.V2_PREFIX)
    assert {p for p, _, _ in expected} >= {f"{V2}/{name}" for name in odd}

    monkeypatch.setattr("registry_admin.storage.backends.AZURE_PAGE_SIZE", 4)
    with monkeypatch.context() as patch:
        patch.setattr(type(backend.client), "list_blobs", None)  # never used on this path
        assert list(backend.list_entries(storage.V2_PREFIX)) == expected


def test_azure_listing_falls_back_to_list_blobs_when_the_sdk_pager_moved(
    tree, azurite, settings, monkeypatch, caplog
):
    tree.image("app", [b"layer"], tag="v1")
    container = azurite_container(azurite)
    upload_tree(container, tree.root)
    azure_settings(settings, azurite, container.container_name)
    backend = storage.get_backend()
    expected = public_listing(backend, storage.V2_PREFIX)
    monkeypatch.setattr("registry_admin.storage.backends._SizedPages", None)
    from registry_admin.storage import backends

    backends._warn_pager_moved.cache_clear()  # said once per process
    assert list(backend.list_entries(storage.V2_PREFIX)) == expected
    assert "listing through list_blobs" in caplog.text


def test_a_listing_page_without_sizes_fails_as_an_azure_error():
    """Which `_listing` turns into a StorageError, as any other listing failure."""
    from xml.etree import ElementTree

    from registry_admin.storage import backends

    page = ElementTree.fromstring(
        "<EnumerationResults><Blobs><Blob><Name>docker/registry/v2/x</Name></Blob></Blobs>"
        "</EnumerationResults>"
    )
    pager = backends._SizedPages(command=None)
    with pytest.raises(backends.azure_exceptions.DecodeError, match="expected fields"):
        pager._extract_data_cb(("primary", page))
    complete = ElementTree.fromstring(
        "<EnumerationResults><Blobs><Blob><Name Encoded='true'>a%20b</Name><Properties>"
        "<Content-Length>7</Content-Length><Last-Modified>Mon, 30 Nov 2026 12:00:00 GMT"
        "</Last-Modified></Properties></Blob></Blobs><NextMarker>next</NextMarker>"
        "</EnumerationResults>"
    )
    marker, items = pager._extract_data_cb(("primary", complete))
    assert marker == "next"
    assert [(i.name, i.size) for i in items] == [("a b", 7)]
    assert items[0].modified == 1796040000.0


def test_a_pruned_relisting_finds_what_the_whole_one_finds(tree):
    """The online collector's re-listings walk only into watched layer links and revisions the
    mark did not know: the same links, references and new revisions as the whole walk."""
    from registry_admin.storage.layout import REPOSITORIES
    from registry_admin.storage.scan import mark, relist, relist_pruner, unmarked

    backend = storage.FilesystemStorage(tree.root)
    watched_layer, other_layer, base = b"watched layer", b"other layer", b"base layer"
    tree.image("team/a", [watched_layer, base], tag="v1")
    tree.image("team/b", [other_layer, base], tag="v1")
    marked = mark(backend.list_entries(storage.V2_PREFIX, unmarked), backend.read)
    # After the mark: a new image in another repository reusing the watched layer, a new link
    # to it in a third, an upload and tags (never read), an index naming a watched manifest.
    gone_manifest, _, _ = tree.image("team/c", [b"own"], tag="x")
    tree.image("team/b", [watched_layer], tag="v2")
    tree.link_layer("team/d", hex_of(watched_layer))
    tree.upload("team/a", b"partial")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"digest": "sha256:" + gone_manifest, "size": 1}],
        }
    ).encode()
    tree.link_revision("team/e", tree.blob(index), tag="all")
    watched = {bytes.fromhex(hex_of(watched_layer)), bytes.fromhex(gone_manifest)}
    listed = []

    def counted(entries):
        for entry in entries:
            listed.append(entry)
            yield entry

    whole = relist(
        counted(backend.list_entries(REPOSITORIES)),
        backend.read,
        watched,
        marked.revisions,
    )
    whole_count, listed[:] = len(listed), []
    pruned = relist(
        counted(backend.list_entries(REPOSITORIES, relist_pruner(watched, marked.revisions))),
        backend.read,
        watched,
        marked.revisions,
    )

    assert {d: sorted(n) for d, n in pruned.linked.items()} == {
        d: sorted(n) for d, n in whole.linked.items()
    }
    assert sorted(whole.linked[bytes.fromhex(hex_of(watched_layer))]) == [
        "team/a",
        "team/b",
        "team/d",
    ]
    assert pruned.referenced == whole.referenced == watched
    assert pruned.new_revisions == whole.new_revisions == 3
    assert len(listed) < whole_count / 2
    assert not any("/_uploads/" in p or "/_manifests/tags/" in p for p, _, _ in listed)
