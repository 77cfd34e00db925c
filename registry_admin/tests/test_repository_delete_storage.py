"""The storage half of a repository delete (steps 3 and 4 of docs/recycle-bin.md "Delete a
repository") on both backends without a registry: the filesystem's directory moves (atomic,
never over a target, never outside the trash), links a client wrote into the moved tree put back
without overwriting what it wrote since, and on Azure (Azurite) the objects removed one by one
with anything written after the re-check's listing kept."""

import os
import time

import pytest

from registry_admin import repository_delete, storage
from registry_admin.repository_delete import Outcome, _Delete, list_contents
from registry_admin.tests.storage_trees import azure_settings, azurite_container

REPO = "docker/registry/v2/repositories/team/app/"
NESTED = "docker/registry/v2/repositories/team/app/nested/_manifests/tags/v1/current/link"
HEX = "ab" * 32
OLD = time.time() - 3 * 3600

pytestmark = pytest.mark.django_db


def seed(put):
    """What a repository holds after steps 1 and 2: an old, abandoned upload; and a nested
    repository under its name, which is not its to delete."""
    put(REPO + "_uploads/u1/data", b"x" * 100)
    put(REPO + "_uploads/u1/startedat", b"2020-01-01T00:00:00Z")
    put(NESTED, b"sha256:" + HEX.encode())


@pytest.fixture
def disk(tmp_path, settings):
    settings.GC_GRACE_MINUTES = 60
    backend = storage.FilesystemStorage(tmp_path / "storage")

    def put(path, data, when=OLD):
        full = tmp_path / "storage" / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(data)
        os.utime(full, (when, when))

    backend.put = put
    return backend


def deleter(backend):
    return _Delete(
        "tester", "team/app", backend, {}, Outcome("team/app", False), lambda m: None, "k"
    )


def files(backend):
    found = []
    for directory, _, names in os.walk(backend.root):
        found += [os.path.relpath(os.path.join(directory, n), backend.root) for n in names]
    return sorted(found)


def test_the_listing_sorts_a_repository_and_leaves_nested_ones_out(disk):
    seed(disk.put)
    disk.put(REPO + f"_manifests/revisions/sha256/{HEX}/link", b"l")
    disk.put(REPO + "_manifests/tags/v1/current/link", b"l")
    disk.put(REPO + f"_manifests/tags/v1/index/sha256/{HEX}/link", b"l")
    disk.put(REPO + f"_layers/sha256/{HEX}/link", b"l")
    found = list_contents(disk, "team/app")
    assert found.revisions == {"sha256:" + HEX} and found.tags == {"v1"}
    assert found.layers == {"sha256:" + HEX} and set(found.uploads) == {"u1"}
    assert len(found.tag_paths) == 2 and not any("nested" in p for p in found.paths)
    assert deleter(disk).pushed_meanwhile(found).startswith("a client pushed to it meanwhile")


def test_filesystem_removes_the_repository_but_not_a_nested_one(disk):
    seed(disk.put)
    run = deleter(disk)
    assert run.pushed_meanwhile(list_contents(disk, "team/app")) == ""
    assert run.remove_filesystem() == ""
    assert files(disk) == [NESTED]
    assert os.listdir(os.path.join(disk.root, "oyster-trash/repositories")) == []


def test_filesystem_removes_the_empty_directories_up_to_repositories(disk):
    disk.put(REPO + "_uploads/u1/data", b"x")
    assert deleter(disk).remove_filesystem() == ""
    assert os.listdir(os.path.join(disk.root, "docker/registry/v2/repositories")) == []


def test_a_link_written_into_the_moved_tree_goes_back_never_over_a_newer_one(disk, monkeypatch):
    """A client whose write resolved its path before the rename lands in the moved tree: the
    link goes back; where the client wrote again at the new place, its newer file stays."""
    seed(disk.put)
    real = disk.move_directory
    link = f"_layers/sha256/{HEX}/link"

    def move_then_write(source, target):
        moved = real(source, target)
        if source.endswith("_layers"):
            disk.put(target + "/" + link.split("/", 1)[1], b"sha256:" + HEX.encode(), time.time())
        if source.endswith("_manifests"):
            disk.put(target + "/tags/v1/current/link", b"old", time.time())
            disk.put(REPO + "_manifests/tags/v1/current/link", b"newer", time.time())
        return moved

    monkeypatch.setattr(disk, "move_directory", move_then_write)
    problem = deleter(disk).remove_filesystem()
    assert problem.startswith("a client pushed to it while its directory was moved away")
    with open(os.path.join(disk.root, REPO + link), "rb") as handle:
        assert handle.read() == b"sha256:" + HEX.encode()
    with open(os.path.join(disk.root, REPO + "_manifests/tags/v1/current/link"), "rb") as handle:
        assert handle.read() == b"newer"
    assert os.listdir(os.path.join(disk.root, "oyster-trash/repositories")) == []


def test_the_directory_moves_refuse_what_they_must_not_touch(disk):
    disk.put("oyster-trash/repositories/x/team/app/_layers/f", b"1")
    disk.put(REPO + "_layers/f", b"2")
    with pytest.raises(storage.StorageError, match="it exists"):
        disk.move_directory(REPO + "_layers", "oyster-trash/repositories/x/team/app/_layers")
    assert disk.move_directory(REPO + "_nothing", "oyster-trash/y") is False
    for hostile in ("../etc", "/etc", "a/../../b", "a//b", "a\x00b"):
        with pytest.raises(storage.StorageError):
            disk.move_directory(hostile, "oyster-trash/z")
        with pytest.raises(storage.StorageError):
            disk.remove_trash_tree(hostile)
    with pytest.raises(storage.StorageError, match="not in oyster-trash"):
        disk.remove_trash_tree("docker/registry/v2/repositories")
    assert (
        disk.move_back([("oyster-trash/repositories/x/team/app/_layers/f", REPO + "_layers/f")])
        == 0
    )
    with open(os.path.join(disk.root, REPO + "_layers/f"), "rb") as handle:
        assert handle.read() == b"2"
    disk.remove_empty_directories(REPO + "_layers", "docker/registry/v2/repositories")
    assert os.path.exists(os.path.join(disk.root, REPO + "_layers/f"))


# --- Azure Blob (Azurite) ---


@pytest.fixture
def blob_store(azurite, settings):
    container = azurite_container(azurite)
    azure_settings(settings, azurite, container.container_name, root_directory="root")
    settings.GC_GRACE_MINUTES = 0
    backend = storage.get_backend()
    backend.raw = container

    def put(path, data, when=None):
        container.upload_blob("root/" + path, data, overwrite=True)

    backend.put = put
    return backend


def names(container):
    return sorted(container.list_blob_names())


def test_azure_removes_the_repository_objects_and_keeps_the_nested_repository(blob_store):
    seed(blob_store.put)
    run = deleter(blob_store)
    time.sleep(0.01)
    contents = list_contents(blob_store, "team/app")
    assert run.pushed_meanwhile(contents) == ""
    assert run.remove_objects(contents) == ""
    assert names(blob_store.raw) == ["root/" + NESTED]


def test_azure_keeps_what_a_client_wrote_after_the_recheck(blob_store):
    seed(blob_store.put)
    contents = list_contents(blob_store, "team/app")
    blob_store.put(REPO + f"_layers/sha256/{HEX}/link", b"sha256:" + HEX.encode())
    problem = deleter(blob_store).remove_objects(contents)
    assert problem.startswith("a client wrote 1 object(s) to it meanwhile")
    assert "root/" + REPO + f"_layers/sha256/{HEX}/link" in names(blob_store.raw)
    assert not any("_uploads" in name for name in names(blob_store.raw))


def test_azure_a_young_upload_stops_the_delete(blob_store, settings):
    settings.GC_GRACE_MINUTES = 60
    seed(blob_store.put)
    problem = deleter(blob_store).pushed_meanwhile(list_contents(blob_store, "team/app"))
    assert "1 upload(s) started or written within GC_GRACE_MINUTES" in problem
    assert repository_delete.REASON == "repository delete"


def test_a_delete_killed_after_its_moves_is_finished_by_the_next(disk):
    """Killed between the moves and the inspection: the next delete puts back the links a
    client wrote into the moved tree (never over a newer file) and clears the trash."""
    trash = "oyster-trash/repositories/20261207T000000-dead/team/app/"
    disk.put(trash + f"_layers/sha256/{HEX}/link", b"sha256:" + HEX.encode())
    disk.put(trash + "_manifests/tags/v1/current/link", b"old")
    disk.put(trash + "_uploads/u1/data", b"x")
    disk.put(REPO + "_manifests/tags/v1/current/link", b"newer")
    assert repository_delete.recover_trash(disk) == 1
    with open(os.path.join(disk.root, REPO + f"_layers/sha256/{HEX}/link"), "rb") as handle:
        assert handle.read() == b"sha256:" + HEX.encode()
    with open(os.path.join(disk.root, REPO + "_manifests/tags/v1/current/link"), "rb") as handle:
        assert handle.read() == b"newer"
    assert os.listdir(os.path.join(disk.root, "oyster-trash/repositories")) == []
    assert repository_delete.recover_trash(disk) == 0


def test_a_batch_of_a_delete_still_running_is_left_alone(disk):
    young = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-live"
    path = f"oyster-trash/repositories/{young}/team/app/_layers/sha256/{HEX}/link"
    disk.put(path, b"sha256:" + HEX.encode())
    assert repository_delete.recover_trash(disk) == 0
    assert os.path.exists(os.path.join(disk.root, path))
