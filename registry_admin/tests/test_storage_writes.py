"""The storage writes the online collector needs (delete, move, write, exists), on the
filesystem (tmp_path) and on Azure Blob (Azurite, real SDK): missing objects, overwrites, a
root directory, more than two batches, hostile paths, and permission failures as sentences."""

import contextlib
import datetime
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from registry_admin import storage
from registry_admin.storage import backends
from registry_admin.tests.harness import REPO_ROOT
from registry_admin.tests.storage_trees import azure_settings, azurite_container, hex_of

V2 = "docker/registry/v2"
MANY = 2 * backends.WRITE_BATCH + 88  # three batches, the last one partial


def blob_path(hex_digest):
    return f"{V2}/blobs/sha256/{hex_digest[:2]}/{hex_digest}/data"


def trash_path(hex_digest, run="run-1"):
    return f"oyster-trash/{run}/sha256/{hex_digest}"


def layer_link(repository, hex_digest):
    return f"{V2}/repositories/{repository}/_layers/sha256/{hex_digest}/link"


def contents(number):
    return f"blob number {number}".encode()


HOSTILE = [
    "",
    "..",
    "../outside",
    f"{V2}/../../../outside",
    "/etc/passwd",
    f"/{V2}/blobs",
    f"{V2}//blobs",
    f"./{V2}",
    f"{V2}/blobs/",
    f"{V2}/\0/data",
    None,
]


# --- The filesystem ---


@pytest.fixture
def disk(tmp_path):
    """A FilesystemStorage on tmp_path, with a `put(path, data)` helper."""
    backend = storage.FilesystemStorage(tmp_path / "storage")

    def put(path, data):
        full = tmp_path / "storage" / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(data)
        return full

    backend.put = put
    return backend


def on_disk(backend, path):
    return os.path.join(backend.root, path)


def test_filesystem_deletes_files_never_directories(disk):
    files = [disk.put(blob_path(hex_of(contents(n))), contents(n)) for n in range(3)]
    reported = []

    deleted = disk.delete_objects(
        [
            blob_path(hex_of(contents(0))),
            blob_path(hex_of(contents(1))),
            blob_path(hex_of(b"never stored")),  # its directory does not exist either
            blob_path(hex_of(contents(1))),  # twice: gone the second time
        ],
        progress=reported.append,
    )

    assert deleted == 2
    assert [path.exists() for path in files] == [False, False, True]
    assert all(path.parent.is_dir() for path in files)  # empty blob directories stay
    assert reported == [4]


def test_filesystem_deletes_a_stream_of_several_batches(disk):
    for number in range(MANY):
        disk.put(blob_path(hex_of(contents(number))), contents(number))
    reported = []

    deleted = disk.delete_objects(
        (blob_path(hex_of(contents(number))) for number in range(MANY)), progress=reported.append
    )

    assert deleted == MANY
    assert list(disk.list_entries(storage.V2_PREFIX)) == []
    assert reported == [256, 512, MANY]


def test_filesystem_moves_into_the_trash_and_back(disk):
    kept = hex_of(contents(1))
    source = disk.put(blob_path(kept), contents(1))
    os.utime(source, (1_600_000_000, 1_600_000_000))
    overwritten = hex_of(contents(2))
    disk.put(blob_path(overwritten), contents(2))
    disk.put(trash_path(overwritten), b"an earlier run's copy of the same bytes")
    reported = []

    moved = disk.move_objects(
        iter(
            [
                (blob_path(kept), trash_path(kept)),
                (blob_path(overwritten), trash_path(overwritten)),
                (blob_path(hex_of(b"missing")), trash_path(hex_of(b"missing"))),
            ]
        ),
        progress=reported.append,
    )

    assert moved == 2
    assert reported == [3]
    assert not source.exists() and source.parent.is_dir()  # the blob's directory stays
    trashed = on_disk(disk, trash_path(kept))
    assert Path(trashed).read_bytes() == contents(1)
    assert os.stat(trashed).st_mtime == 1_600_000_000  # a rename keeps the data's time
    assert Path(on_disk(disk, trash_path(overwritten))).read_bytes() == contents(2)
    assert not os.path.exists(on_disk(disk, trash_path(hex_of(b"missing"))))
    assert not disk.object_exists(blob_path(kept))

    # Back, into a blob directory that is gone too (it never is removed by Oyster, but could be
    # by the registry's own collector).
    os.rmdir(source.parent)
    assert disk.move_objects([(trash_path(kept), blob_path(kept))]) == 1
    assert source.read_bytes() == contents(1)


def test_filesystem_moves_several_batches(disk):
    digests = [hex_of(contents(number)) for number in range(MANY)]
    for number, hex_digest in enumerate(digests):
        disk.put(blob_path(hex_digest), contents(number))
    reported = []

    moved = disk.move_objects(
        ((blob_path(d), trash_path(d)) for d in digests), progress=reported.append
    )

    assert moved == MANY
    assert reported == [256, 512, MANY]
    assert list(disk.list_entries(storage.V2_PREFIX)) == []
    trashed = list(disk.list_entries("oyster-trash/"))
    assert sorted(path for path, _, _ in trashed) == sorted(trash_path(d) for d in digests)


def test_filesystem_refuses_to_move_a_directory(disk):
    disk.put(blob_path(hex_of(b"x")), b"x")
    with pytest.raises(storage.StorageError, match="is not a file"):
        disk.move_objects([(f"{V2}/blobs", "oyster-trash/run-1/blobs")])
    assert disk.object_exists(blob_path(hex_of(b"x")))
    with pytest.raises(storage.StorageError, match="Is a directory"):
        disk.delete_objects([f"{V2}/blobs/sha256"])


def test_filesystem_writes_a_link_atomically_and_readable(disk):
    digest = hex_of(b"layer")
    link = layer_link("team/app", digest)
    umask = os.umask(0o022)
    os.umask(umask)

    disk.write_object(link, f"sha256:{digest}".encode())
    assert disk.read(link, 100) == f"sha256:{digest}".encode()
    assert os.stat(on_disk(disk, link)).st_mode & 0o777 == 0o666 & ~umask

    disk.write_object(link, b"sha256:" + b"0" * 64)  # replaced
    assert disk.read(link, 100) == b"sha256:" + b"0" * 64
    assert os.listdir(os.path.dirname(on_disk(disk, link))) == ["link"]  # no temporary left


def test_filesystem_write_removes_what_a_killed_write_of_the_same_path_left(disk):
    """A run killed between the temporary write and the rename leaves `.link.oyster-*.tmp`
    (the kill test found one in the trash); the next write of that path clears it, and only it."""
    digest = hex_of(b"layer")
    link = layer_link("team/app", digest)
    directory = os.path.dirname(on_disk(disk, link))
    os.makedirs(directory)
    for name in (".link.oyster-0123456789ab.tmp", ".other.oyster-0123456789ab.tmp", "keep"):
        with open(os.path.join(directory, name), "wb") as handle:
            handle.write(b"half")

    disk.write_object(link, f"sha256:{digest}".encode())
    assert sorted(os.listdir(directory)) == [".other.oyster-0123456789ab.tmp", "keep", "link"]
    assert disk.read(link, 100) == f"sha256:{digest}".encode()


def test_filesystem_object_exists(disk):
    digest = hex_of(b"x")
    disk.put(blob_path(digest), b"x")
    assert disk.object_exists(blob_path(digest))
    assert not disk.object_exists(blob_path(hex_of(b"y")))
    assert not disk.object_exists(f"{V2}/blobs")  # a directory is not an object
    assert not disk.object_exists(blob_path(digest) + "/below-a-file")


@pytest.mark.parametrize("hostile", HOSTILE)
def test_filesystem_refuses_paths_outside_the_root_before_touching_anything(disk, hostile):
    first = blob_path(hex_of(b"first"))
    disk.put(first, b"first")
    outside = Path(disk.root).parent / "outside"
    outside.write_bytes(b"not the registry's")

    for call in (
        lambda: disk.delete_objects([first, hostile]),
        lambda: disk.move_objects([(first, trash_path("a")), (first, hostile)]),
        lambda: disk.move_objects([(hostile, trash_path("a"))]),
        lambda: disk.write_object(hostile, b"x"),
        lambda: disk.object_exists(hostile),
    ):
        with pytest.raises(storage.StorageError, match="Refusing to change"):
            call()
    assert disk.read(first, 10) == b"first"
    assert outside.read_bytes() == b"not the registry's"
    assert list(disk.list_entries("oyster-trash/")) == []


def test_filesystem_refuses_a_move_that_is_not_a_pair(disk):
    with pytest.raises(storage.StorageError, match="not a .source, target. pair"):
        disk.move_objects([("only-one",)])


def run_without_privileges(code):
    """`code` in a child Python whose file permissions bind it: as root, a root without
    capabilities (CAP_DAC_OVERRIDE is what lets root write into a read-only directory)."""
    command = [sys.executable, "-c", textwrap.dedent(code)]
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs", *command]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=60, check=False
    )


def test_filesystem_permission_denied_is_a_sentence(disk):
    digest = hex_of(b"locked")
    locked = disk.put(blob_path(digest), b"locked")
    directory = locked.parent
    directory.chmod(0o555)
    try:
        result = run_without_privileges(
            f"""
            from registry_admin.storage import FilesystemStorage, StorageError
            backend = FilesystemStorage({disk.root!r})
            for name, call in (
                ("delete", lambda: backend.delete_objects([{blob_path(digest)!r}])),
                ("move", lambda: backend.move_objects([({blob_path(digest)!r}, "trash/x")])),
                ("back", lambda: backend.move_objects([("trash/x", {blob_path(digest)!r})])),
                ("write", lambda: backend.write_object({blob_path(digest)!r}, b"x")),
            ):
                try:
                    call()
                    print(name, "done")
                except StorageError as error:
                    print(name, error)
            """
        )
    finally:
        directory.chmod(0o755)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    access = "the worker needs write access to the registry's storage for the online collector."
    assert lines["delete"] == f"Permission denied trying to delete {blob_path(digest)}: {access}"
    assert lines["move"] == (
        f"Permission denied trying to move {blob_path(digest)} to trash/x: {access}"
    )
    assert lines["back"] == "done"  # a missing source is skipped, whatever the permissions
    assert lines["write"].startswith("Permission denied trying to write")
    assert locked.read_bytes() == b"locked"
    assert os.listdir(directory) == ["data"]


@contextlib.contextmanager
def mounted_read_only(directory):
    """`directory` bind-mounted read-only over itself, as a read-only volume mount."""
    subprocess.run(["mount", "--bind", directory, directory], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", directory, directory], check=True)
        yield
    finally:
        subprocess.run(["umount", directory], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="a bind mount needs root")
def test_filesystem_read_only_mount_is_a_sentence(disk):
    digest = hex_of(b"kept")
    disk.put(blob_path(digest), b"kept")

    with mounted_read_only(disk.root):
        with pytest.raises(storage.StorageError) as deleting:
            disk.delete_objects([blob_path(digest)])
        with pytest.raises(storage.StorageError) as writing:
            disk.write_object(layer_link("team/app", digest), b"sha256:" + digest.encode())
        with pytest.raises(storage.StorageError) as moving:
            disk.move_objects([(blob_path(digest), trash_path(digest))])

    assert str(deleting.value) == (
        f"Could not delete {blob_path(digest)}: the registry's storage is mounted read-only, "
        "and the worker needs write access to the registry's storage for the online collector."
    )
    assert "mounted read-only" in str(writing.value)
    assert "mounted read-only" in str(moving.value)
    assert disk.object_exists(blob_path(digest))


# --- Azure Blob (Azurite) ---


@pytest.fixture
def blob_store(azurite, settings):
    """An AzureStorage on a fresh container under the root directory `deep/root`, with the
    container client (`raw`) and a `put(path, data)` helper that writes under the root."""
    container = azurite_container(azurite)
    azure_settings(settings, azurite, container.container_name, root_directory="deep/root")
    backend = storage.get_backend()
    backend.raw = container

    def put(path, data):
        container.upload_blob("deep/root/" + path, data, overwrite=True)

    backend.put = put
    return backend


def names(container, prefix=""):
    return sorted(container.list_blob_names(name_starts_with=prefix))


def test_get_backend_takes_the_write_concurrency(azurite, settings):
    container = azurite_container(azurite)
    azure_settings(settings, azurite, container.container_name, STORAGE_WRITE_CONCURRENCY=3)
    assert storage.get_backend().write_concurrency == 3
    settings.STORAGE_WRITE_CONCURRENCY = 0
    assert storage.get_backend().write_concurrency == 1


@pytest.mark.parametrize("concurrency", [1, 8])
def test_azure_deletes_in_batches_under_the_root_directory(blob_store, concurrency):
    blob_store.write_concurrency = concurrency
    digests = [hex_of(contents(number)) for number in range(MANY)]
    for number, hex_digest in enumerate(digests):
        blob_store.put(blob_path(hex_digest), contents(number))
    # The same relative path outside the root directory is not ours.
    blob_store.raw.upload_blob(blob_path(digests[0]), b"elsewhere")
    calls = []
    real = blob_store.client.delete_blobs
    blob_store.client.delete_blobs = lambda *blobs, **options: (
        calls.append(len(blobs)) or real(*blobs, **options)
    )
    reported = []

    def paths():
        yield blob_path(hex_of(b"never stored"))
        yield from (blob_path(d) for d in digests)
        yield blob_path(digests[5])  # a second time: gone by then, or deleted concurrently

    deleted = blob_store.delete_objects(paths(), progress=reported.append)

    assert deleted == MANY
    assert names(blob_store.raw) == [blob_path(digests[0])]
    assert sorted(calls) == sorted([256, 256, MANY + 2 - 512])
    assert reported[-1] == MANY + 2 and reported == sorted(reported)


def test_azure_sends_throttled_sub_requests_again(blob_store):
    """A sub-request the service answered 503 (ServerBusy, as Azure throttles a batch) is sent
    again in the next batch request; the others are not."""
    blob_store.retry_backoff = 0.01
    paths = [blob_path(hex_of(contents(number))) for number in range(5)]
    for number, path in enumerate(paths):
        blob_store.put(path, contents(number))
    real, calls = blob_store.client.delete_blobs, []
    busy = types.SimpleNamespace(status_code=503, headers={"x-ms-error-code": "ServerBusy"})

    def throttled_once(*blobs, **options):
        calls.append(list(blobs))
        if len(calls) > 1:
            return real(*blobs, **options)
        return iter([busy, *real(*blobs[1:], **options)])  # the first one not even tried

    blob_store.client.delete_blobs = throttled_once

    assert blob_store.delete_objects(paths) == 5
    assert calls == [["deep/root/" + path for path in paths], ["deep/root/" + paths[0]]]
    assert names(blob_store.raw) == []


def test_azure_a_failed_deletion_stops_with_a_sentence(blob_store):
    """A leased blob cannot be deleted: that one fails (412), the others in its batch go."""
    paths = [blob_path(hex_of(contents(number))) for number in range(10)]
    for number, path in enumerate(paths):
        blob_store.put(path, contents(number))
    blob_store.raw.get_blob_client("deep/root/" + paths[3]).acquire_lease()

    with pytest.raises(storage.StorageError) as failure:
        blob_store.delete_objects(paths)

    assert str(failure.value) == (
        f"1 of 10 blobs could not be deleted; the first, {paths[3]}: Azure storage refused to "
        f"delete blobs in {blob_store._where()} (HTTP 412, LeaseIdMissing)."
    )
    assert names(blob_store.raw) == ["deep/root/" + paths[3]]


def test_azure_moves_into_the_trash_and_back(blob_store):
    kept, overwritten = hex_of(contents(1)), hex_of(contents(2))
    blob_store.put(blob_path(kept), contents(1))
    blob_store.put(blob_path(overwritten), contents(2))
    blob_store.put(trash_path(overwritten), b"an earlier run's copy")
    reported = []

    moved = blob_store.move_objects(
        [
            (blob_path(kept), trash_path(kept)),
            (blob_path(hex_of(b"missing")), trash_path(hex_of(b"missing"))),
            (blob_path(overwritten), trash_path(overwritten)),
        ],
        progress=reported.append,
    )

    assert moved == 2
    assert reported == [3]
    assert names(blob_store.raw) == sorted(
        ["deep/root/" + trash_path(kept), "deep/root/" + trash_path(overwritten)]
    )
    assert blob_store.read(trash_path(kept), 100) == contents(1)
    assert blob_store.read(trash_path(overwritten), 100) == contents(2)

    assert blob_store.move_objects([(trash_path(kept), blob_path(kept))]) == 1
    assert blob_store.read(blob_path(kept), 100) == contents(1)
    assert not blob_store.object_exists(trash_path(kept))


def test_azure_moves_several_batches(blob_store):
    digests = [hex_of(contents(number)) for number in range(MANY)]
    for number, hex_digest in enumerate(digests):
        blob_store.put(blob_path(hex_digest), contents(number))
    reported = []

    moved = blob_store.move_objects(
        ((blob_path(d), trash_path(d)) for d in digests), progress=reported.append
    )

    assert moved == MANY
    assert reported[-1] == MANY and reported == sorted(reported)
    assert names(blob_store.raw) == sorted("deep/root/" + trash_path(d) for d in digests)
    assert blob_store.read(trash_path(digests[-1]), 100) == contents(MANY - 1)


def test_azure_writes_and_checks_objects_under_the_root_directory(blob_store):
    digest = hex_of(b"layer")
    link = layer_link("team/app", digest)
    assert not blob_store.object_exists(link)

    blob_store.write_object(link, f"sha256:{digest}".encode())
    blob_store.write_object(link, f"sha256:{digest}".encode())  # again: replaced

    assert blob_store.object_exists(link)
    assert names(blob_store.raw) == ["deep/root/" + link]
    assert blob_store.read(link, 100) == f"sha256:{digest}".encode()


@pytest.mark.parametrize("hostile", HOSTILE)
def test_azure_refuses_paths_outside_the_root_before_touching_anything(blob_store, hostile):
    first = blob_path(hex_of(b"first"))
    blob_store.put(first, b"first")
    blob_store.raw.upload_blob("outside", b"not the registry's")

    for call in (
        lambda: blob_store.delete_objects([first, hostile]),
        lambda: blob_store.move_objects([(first, trash_path("a")), (first, hostile)]),
        lambda: blob_store.write_object(hostile, b"x"),
        lambda: blob_store.object_exists(hostile),
    ):
        with pytest.raises(storage.StorageError, match="Refusing to change"):
            call()
    assert names(blob_store.raw) == ["deep/root/" + first, "outside"]


def test_azure_without_write_permission_is_a_sentence(blob_store, azurite):
    """A SAS that may read and list (the scan's) but not write or delete."""
    paths = [blob_path(hex_of(contents(number))) for number in range(3)]
    for number, path in enumerate(paths):
        blob_store.put(path, contents(number))
    sas = generate_container_sas(
        azurite.account_name,
        blob_store.container,
        account_key=azurite.account_key,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1),
    )
    reader = storage.AzureStorage(
        container=blob_store.container,
        account_url=azurite.account_url,
        credential="sas",
        sas_token=sas,
        root_directory="deep/root",
        timeout=5,
    )
    denied = (
        f"Permission denied on {reader._where()} (AuthorizationPermissionMismatch): the online "
        "collector needs credentials that may write and delete blobs (a SAS token with read, "
        "list, write and delete, sp=rwdl; for an identity, the Storage Blob Data Contributor "
        "role)."
    )

    with pytest.raises(storage.StorageError) as deleting:
        reader.delete_objects(paths)
    with pytest.raises(storage.StorageError) as moving:
        reader.move_objects([(paths[0], trash_path("a"))])
    with pytest.raises(storage.StorageError) as writing:
        reader.write_object(layer_link("team/app", "a" * 64), b"sha256:" + b"a" * 64)

    assert (
        str(deleting.value) == f"3 of 3 blobs could not be deleted; the first, {paths[0]}: {denied}"
    )
    assert str(moving.value) == denied
    assert str(writing.value) == denied
    for error in (deleting, moving, writing):
        assert sas not in str(error.value)
    assert reader.object_exists(paths[0])  # reading is allowed
    assert names(blob_store.raw) == sorted("deep/root/" + path for path in paths)


def test_azure_with_a_writing_sas_moves_and_deletes(blob_store, azurite):
    """A SAS client's copy source is the source blob's URL with the same SAS."""
    path = blob_path(hex_of(b"x"))
    blob_store.put(path, b"x")
    sas = generate_container_sas(
        azurite.account_name,
        blob_store.container,
        account_key=azurite.account_key,
        permission=ContainerSasPermissions(read=True, list=True, write=True, delete=True),
        expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1),
    )
    writer = storage.AzureStorage(
        container=blob_store.container,
        account_url=azurite.account_url,
        credential="sas",
        sas_token=sas,
        root_directory="deep/root",
        timeout=5,
    )
    assert writer.move_objects([(path, trash_path("x"))]) == 1
    assert writer.delete_objects([trash_path("x")]) == 1
    assert names(blob_store.raw) == []


def test_azure_a_missing_container_is_a_sentence(azurite, settings):
    azure_settings(settings, azurite, "no-such-container")
    backend = storage.get_backend()
    expected = "The container 'no-such-container' does not exist"
    for call in (
        lambda: backend.delete_objects([blob_path("a" * 64)]),
        lambda: backend.move_objects([(blob_path("a" * 64), trash_path("a"))]),
        lambda: backend.write_object(blob_path("a" * 64), b"x"),
        lambda: backend.object_exists(blob_path("a" * 64)),
    ):
        with pytest.raises(storage.StorageError, match=expected):
            call()


def test_filesystem_listing_skips_the_directories_it_is_told_to(disk):
    for path in [
        "docker/registry/v2/repositories/a/_layers/sha256/aa/link",
        "docker/registry/v2/repositories/a/_manifests/tags/v1/current/link",
        "docker/registry/v2/repositories/a/_manifests/revisions/sha256/bb/link",
        "docker/registry/v2/repositories/a/_uploads/u1/data",
        "docker/registry/v2/repositories/a/tags/x/link",  # a repository named "a/tags"
    ]:
        disk.put(path, b"x")
    listed = [
        p
        for p, _, _ in disk.list_entries(
            "docker/registry/v2/", lambda d: d.endswith("/_manifests/tags/")
        )
    ]
    assert listed == [
        "docker/registry/v2/repositories/a/_layers/sha256/aa/link",
        "docker/registry/v2/repositories/a/_manifests/revisions/sha256/bb/link",
        "docker/registry/v2/repositories/a/_uploads/u1/data",
        "docker/registry/v2/repositories/a/tags/x/link",
    ]
    everything = [p for p, _, _ in disk.list_entries("docker/registry/v2/")]
    assert len(everything) == 5
