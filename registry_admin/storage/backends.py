"""How the portal reaches the registry's storage, and the settings that pick and configure it.

Two backends share one narrow interface: `list_entries(prefix, prune=None)` yields `(path,
size, last_modified)` for every object under `prefix` (paths relative to the registry's root
directory, last_modified as a POSIX timestamp; the filesystem does not walk into a directory
`prune(path + "/")` rejects, Azure's flat listing yields those objects anyway),
`scan_entries()` the listing the usage scan
takes (the same, or names only where the scan can do without: see `scan`), `read(path,
max_bytes)` returns a small object's bytes (None when it is absent) and `blob_size(digest)` a
stored blob's size.

The online collector (issue #28, docs/online-collector.md) also writes: `delete_objects(paths)`,
`move_objects(moves)` (into and out of its trash), `write_object(path, data)` (a layer link
put back) and `object_exists(path)`. Their paths are relative to the same root and must stay
under it: `..`, `.`, empty components and absolute paths are refused before the batch holding
them is touched. They take iterables that may hold millions of items and stream them in
batches of `WRITE_BATCH`, on `STORAGE_WRITE_CONCURRENCY` threads where the backend is remote;
their `progress(done)` callback is always called in the caller's thread (it may write to the
database). Neither backend ever removes a directory (the registry may be writing into it at
that moment).
`get_backend()` builds the one `STORAGE_BACKEND` names with a plain if/elif: two kinds exist,
a dotted-path choice would wait for a third.

The only module that imports azure.*. Raises `StorageError`, whose message is a sentence for
the page.
"""

import contextlib
import errno
import functools
import glob
import itertools
import logging
import os
import shutil
import stat
import time
import urllib.request
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from email.utils import parsedate_to_datetime
from typing import NamedTuple
from urllib.parse import unquote

import requests
from azure.core import exceptions as azure_exceptions
from azure.core.paging import ItemPaged
from azure.storage.blob import ContainerClient, ExponentialRetry
from django.conf import settings

from .layout import BLOBS, REPOSITORIES, V2_PREFIX, blob_path, digest_bytes

logger = logging.getLogger(__name__)

# Listing page size for Azure (the service's maximum).
AZURE_PAGE_SIZE = 5000

# Azure error codes meaning "these credentials may not do that" (the list or the read).
_PERMISSION_CODES = (
    "AuthorizationPermission",
    "AuthorizationResourceTypeMismatch",
    "AuthorizationServiceMismatch",
    "AuthorizationProtocolMismatch",
    "AuthorizationSourceIPMismatch",
    "InsufficientAccountPermissions",
)


# Objects per Blob Batch request (the service's maximum), and the unit in which both backends
# take paths from their input, check them and report progress.
WRITE_BATCH = 256
# Seconds a server-side copy inside the container may stay pending before it is aborted.
AZURE_COPY_TIMEOUT = 300.0
# Batch sub-request statuses worth sending again (throttling, a server hiccup).
_RETRY_STATUSES = (500, 503)

_WRITE_ACCESS = "the worker needs write access to the registry's storage for the online collector"
# The only place a directory may be removed whole: Oyster's own trash, never the registry's tree.
TRASH_ROOT = "oyster-trash/"


class StorageError(Exception):
    """Listing, reading or changing the registry's storage failed; str(error) is a sentence for
    the page."""


def _checked(path):
    """`path` when it names an object under the storage root, else StorageError."""
    if not isinstance(path, str) or "\0" in path or path.startswith("/"):
        raise StorageError(f"Refusing to change {path!r}: not a path under the storage root.")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise StorageError(f"Refusing to change {path!r}: not a path under the storage root.")
    return path


def _checked_moves(moves):
    checked = []
    for move in moves:
        if not isinstance(move, tuple | list) or len(move) != 2:
            raise StorageError(f"Refusing to move {move!r}: not a (source, target) pair.")
        checked.append((_checked(move[0]), _checked(move[1])))
    return checked


def _batches(items, check):
    """Lists of up to WRITE_BATCH items taken from `items` as they come, each passed through
    `check` (which raises on a bad one) before it is handed out."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, WRITE_BATCH)):
        yield check(batch)


class _Progress:
    """Counts handled objects and calls `progress(done)` every WRITE_BATCH of them and at the
    end."""

    def __init__(self, progress):
        self.progress, self.done, self.reported = progress, 0, 0

    def advance(self, count):
        self.done += count
        if self.progress and self.done - self.reported >= WRITE_BATCH:
            self.reported = self.done
            self.progress(self.done)

    def finish(self):
        if self.progress and self.done != self.reported:
            self.reported = self.done
            self.progress(self.done)


class _Bounded:
    """Calls run on `concurrency` threads, at most twice that many submitted at once, so that a
    stream of millions is never queued whole. `submit` and `drain` return the results of the
    calls that have finished (and raise the first failure); leaving the `with` block cancels
    what has not started and waits for what has."""

    def __init__(self, concurrency):
        self.limit = 2 * concurrency
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="storage-write")
        self.pending = set()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, function, *args):
        finished = self._wait(self.limit - 1)
        self.pending.add(self.pool.submit(function, *args))
        return finished

    def drain(self):
        return self._wait(0)

    def _wait(self, at_most):
        finished = []
        while len(self.pending) > at_most:
            done, self.pending = wait(self.pending, return_when=FIRST_COMPLETED)
            finished.extend(future.result() for future in done)
        return finished


# --- Backends ---


class FilesystemStorage:
    """The filesystem driver's `rootdirectory`, walked in sorted order without following links."""

    kind = "filesystem"

    def __init__(self, root):
        self.root = os.path.abspath(root)

    @property
    def location(self):
        return self.root

    def list_entries(self, prefix, prune=None):
        """Files under `prefix` in the order of their full paths, as Azure lists blobs; no
        directory for which `prune(relative path ending with "/")` is true is walked into."""
        if not os.path.isdir(self.root):
            raise StorageError(
                f"The storage root {self.root} does not exist: set STORAGE_FILESYSTEM_ROOT to the "
                "registry's storage rootdirectory."
            )
        start = os.path.join(self.root, prefix)
        if not os.path.isdir(start):
            return  # a registry that never stored anything has no docker/registry/v2 yet
        levels = [iter(self._sorted_items(start, prefix.rstrip("/") + "/"))]
        while levels:
            item = next(levels[-1], None)
            if item is None:
                levels.pop()
                continue
            relative, path, size, modified = item
            if size is None:
                if prune is None or not prune(relative):
                    levels.append(iter(self._sorted_items(path, relative)))
            else:
                yield relative, size, modified

    def scan_entries(self):
        # A stat per file is cheap here: sizes and times for everything.
        return self.list_entries(V2_PREFIX)

    @staticmethod
    def _sorted_items(directory, relative):
        """(relative path, path, size, mtime) of a directory's entries, sorted like full paths;
        a subdirectory has size None and its relative path ends with '/', as it sorts."""
        try:
            with os.scandir(directory) as scanned:
                entries = list(scanned)
        except FileNotFoundError:
            return []  # removed while we walked (an upload finished, a GC ran)
        except OSError as exc:
            raise _read_error(exc, directory) from exc
        items = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    items.append((relative + entry.name + "/", entry.path, None, None))
                elif entry.is_file(follow_symlinks=False):
                    stat = entry.stat(follow_symlinks=False)
                    items.append((relative + entry.name, entry.path, stat.st_size, stat.st_mtime))
            except FileNotFoundError:
                continue
        items.sort(key=lambda item: item[0])
        return items

    def blob_size(self, digest):
        """The stored size of blob `digest` (sha256:<hex>), or None when it is not stored."""
        raw = digest_bytes(digest)
        if raw is None:
            return None
        try:
            return os.stat(os.path.join(self.root, blob_path(raw))).st_size
        except OSError:
            return None

    def read(self, path, max_bytes):
        if ".." in path.split("/") or path.startswith("/"):
            raise StorageError(f"Refusing to read {path!r} outside the storage root.")
        try:
            with open(os.path.join(self.root, path), "rb") as handle:
                return handle.read(max_bytes + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _read_error(exc, path) from exc

    # --- Writes (the online collector) ---

    def _full(self, path):
        return os.path.join(self.root, path)

    def delete_objects(self, paths, progress=None):
        """Remove every file in `paths` (relative paths, streamed); returns how many were
        removed. A file already gone is not an error. Directories stay, even empty: a registry
        upload may be renaming a file into one at this moment. `progress(done)` now and then,
        `done` counting the paths handled so far."""
        deleted, counter = 0, _Progress(progress)
        for batch in _batches(paths, lambda batch: [_checked(path) for path in batch]):
            for path in batch:
                try:
                    os.remove(self._full(path))
                    deleted += 1
                except (FileNotFoundError, NotADirectoryError):
                    pass
                except OSError as exc:
                    raise _write_error(exc, "delete", path) from exc
            counter.advance(len(batch))
        counter.finish()
        return deleted

    def move_objects(self, moves, progress=None):
        """Rename each (source, target) pair of `moves` (streamed), creating the target's
        directories and replacing a target that exists (content-addressed: the same bytes);
        returns how many moved. A missing source is skipped. The source's directory stays.
        Both ends are on the registry's volume, so a rename is atomic and keeps the file's
        modification time."""
        moved, counter = 0, _Progress(progress)
        for batch in _batches(moves, _checked_moves):
            for source, target in batch:
                moved += self._move(source, target)
            counter.advance(len(batch))
        counter.finish()
        return moved

    def _move(self, source, target):
        full_source, full_target = self._full(source), self._full(target)
        try:
            if not stat.S_ISREG(os.lstat(full_source).st_mode):
                # A directory renamed by mistake would take a registry's whole subtree with it.
                raise StorageError(f"Refusing to move {source}: it is not a file.")
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise _write_error(exc, "move", source, target) from exc
        try:
            os.replace(full_source, full_target)
            return True
        except (FileNotFoundError, NotADirectoryError):
            pass  # the target's directory is missing, or the source went meanwhile
        except OSError as exc:
            raise _write_error(exc, "move", source, target) from exc
        try:
            os.makedirs(os.path.dirname(full_target), exist_ok=True)
            os.replace(full_source, full_target)
            return True
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and not os.path.lexists(full_source):
                return False
            raise _write_error(exc, "move", source, target) from exc

    # --- Directories (repository deletes; the filesystem only: Azure has no directories) ---

    def move_directory(self, source, target):
        """Rename the directory `source` to `target` in one step (both on the registry's
        volume): a registry writing into it meanwhile lands in the moved tree or in a new one,
        never half in each. `target` must not exist; its parent is created. False when there
        is no `source`."""
        full_source, full_target = self._full(_checked(source)), self._full(_checked(target))
        if not os.path.isdir(full_source) or os.path.islink(full_source):
            return False
        if os.path.lexists(full_target):
            raise StorageError(f"Refusing to move {source} onto {target}: it exists.")
        try:
            os.makedirs(os.path.dirname(full_target), exist_ok=True)
            os.rename(full_source, full_target)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _write_error(exc, "move", source, target) from exc

    def move_back(self, moves):
        """Move each (source, target) file of `moves` unless `target` exists: a hard link
        (which never replaces) then the source's removal, so a file a client wrote at the
        target meanwhile is kept. Returns how many moved."""
        moved = 0
        for source, target in _checked_moves(moves):
            full_source, full_target = self._full(source), self._full(target)
            try:
                os.makedirs(os.path.dirname(full_target), exist_ok=True)
                os.link(full_source, full_target)
            except FileExistsError:
                continue
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _write_error(exc, "move", source, target) from exc
            with contextlib.suppress(FileNotFoundError):
                os.remove(full_source)
            moved += 1
        return moved

    def remove_empty_directories(self, path, stop):
        """Remove the directory `path` and then its parents, each only while it is empty, up to
        (not including) `stop`. A registry creating something inside meanwhile keeps it (rmdir
        of a directory that is not empty fails, and we stop there)."""
        path = _checked(path.rstrip("/"))
        stop = stop.rstrip("/")
        while path.startswith(stop + "/"):
            try:
                os.rmdir(self._full(path))
            except (FileNotFoundError, NotADirectoryError):
                pass
            except OSError:
                return
            path = path.rsplit("/", 1)[0]

    def remove_trash_tree(self, path):
        """Remove the directory tree `path`, which must lie in Oyster's trash."""
        path = _checked(path.rstrip("/"))
        if not path.startswith(TRASH_ROOT):
            raise StorageError(f"Refusing to remove {path}: not in {TRASH_ROOT}.")
        try:
            shutil.rmtree(self._full(path))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _write_error(exc, "delete", path) from exc

    def write_object(self, path, data):
        """Create or replace the small file `path` with `data`, atomically: written beside it
        under a temporary name, then renamed over it (a reader sees the old or the new
        content, never part of it). The file gets the usual mode (0o666 less the umask), so the
        registry can read what the worker wrote.

        A process killed between the write and the rename leaves its temporary file behind;
        the next write of the same path removes such leftovers (only the collector writes, one
        run at a time under its lease, so no other writer's file can be in flight)."""
        full = self._full(_checked(path))
        directory = os.path.dirname(full)
        prefix = f".{os.path.basename(full)}.oyster-"
        temporary = os.path.join(directory, f"{prefix}{uuid.uuid4().hex[:12]}.tmp")
        try:
            os.makedirs(directory, exist_ok=True)
            for leftover in glob.glob(glob.escape(os.path.join(directory, prefix)) + "*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(leftover)
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(bytes(data))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, full)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.remove(temporary)
                raise
        except OSError as exc:
            raise _write_error(exc, "write", path) from exc

    def object_exists(self, path):
        """True when `path` is a file in the storage (a directory is not an object)."""
        try:
            return stat.S_ISREG(os.stat(self._full(_checked(path))).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise _read_error(exc, path) from exc


def _read_error(exc, path):
    """A sentence for a failed filesystem read of `path`."""
    if isinstance(exc, PermissionError):
        return StorageError(
            f"Permission denied reading {path}: the portal needs read access to the "
            "registry's whole storage tree."
        )
    return StorageError(f"Could not read {path}: {exc.strerror}.")


def _write_error(exc, action, path, target=None):
    """A sentence for a failed filesystem change of `path` (and `target`, for a move)."""
    what = f"{path} to {target}" if target else path
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        return StorageError(f"Permission denied trying to {action} {what}: {_WRITE_ACCESS}.")
    if exc.errno == errno.EROFS:
        return StorageError(
            f"Could not {action} {what}: the registry's storage is mounted read-only, and "
            f"{_WRITE_ACCESS}."
        )
    if exc.errno == errno.EXDEV:
        return StorageError(
            f"Could not move {what}: they are on different filesystems (the trash must be on "
            "the registry's storage volume, under its root directory)."
        )
    return StorageError(f"Could not {action} {what}: {exc.strerror or exc}.")


class AzureStorage:
    """A blob container the registry's azure driver writes to, optionally under a root prefix.

    Reference: https://learn.microsoft.com/python/api/azure-storage-blob/azure.storage.blob.containerclient
    The client is built once with explicit connect/read timeouts (the SDK's read default is
    sized for huge uploads) and a short retry policy, so an unreachable account fails in seconds.

    `credential` picks how it signs in (AZURE_STORAGE_CREDENTIAL): `connection_string`, `key`,
    `sas`, or `default`: azure-identity's DefaultAzureCredential chain (environment, workload
    identity, managed identity, the developer's `az login`), so no secret lives in the portal's
    settings. Empty picks the first of connection string, key and SAS that is set, as before.
    """

    kind = "azure"

    def __init__(
        self,
        container,
        connection_string="",
        account_name="",
        account_key="",
        account_url="",
        root_directory="",
        timeout=30.0,
        retries=2,
        credential="",
        sas_token="",
        token_credential=None,
        write_concurrency=8,
        copy_timeout=AZURE_COPY_TIMEOUT,
    ):
        if not container:
            raise StorageError(_NO_CONTAINER)
        self.container = container
        self.prefix = root_directory.strip("/") + "/" if root_directory.strip("/") else ""
        self.timeout = timeout
        self.retries = retries
        self.write_concurrency = max(1, int(write_concurrency))
        self.copy_timeout = copy_timeout
        self.retry_backoff = 1.0  # seconds before sub-requests are sent again, doubling
        problem = azure_credential_problem(
            credential, connection_string, account_name, account_key, account_url, sas_token
        )
        if problem:
            raise StorageError(problem)
        self.credential_kind = azure_credential_kind(
            credential, connection_string, account_key, sas_token
        )
        options = {
            "connection_timeout": timeout,
            "read_timeout": timeout,
            "retry_policy": ExponentialRetry(
                initial_backoff=1, increment_base=2, retry_total=retries, random_jitter_range=0
            ),
        }
        url = account_url or f"https://{account_name}.blob.core.windows.net"
        if self.credential_kind == "key":
            credential = {"account_name": account_name, "account_key": account_key}
        elif self.credential_kind == "sas":
            credential = sas_token.lstrip("?")
        elif self.credential_kind == "default":
            credential = _IdentityCredential(token_credential or _default_azure_credential(timeout))

        def client(**environment):
            if self.credential_kind == "connection_string":
                return ContainerClient.from_connection_string(
                    connection_string, container, **options, **environment
                )
            return ContainerClient(url, container, credential=credential, **options, **environment)

        try:
            self.client = client(**_environment_settings(lambda: client().url))
        except ValueError:
            raise StorageError(
                "The Azure storage connection string or account URL is malformed: check "
                "AZURE_STORAGE_CONNECTION_STRING / AZURE_STORAGE_ACCOUNT_URL."
            ) from None

    @property
    def location(self):
        # Account URL and container only: never the key or a SAS token.
        base = self.client.primary_endpoint.split("?", 1)[0].rstrip("/")
        return base + ("/" + self.prefix.rstrip("/") if self.prefix else "")

    def _listing(self, list_method, prefix):
        """(path relative to the root directory, item) of every object under `prefix`, as
        `list_method` (the container's `list_blobs` or `list_blob_names`, or `_sized_listing`)
        gives them, page by page; a failure is a StorageError."""
        strip = len(self.prefix)
        pages = list_method(name_starts_with=self.prefix + prefix, results_per_page=AZURE_PAGE_SIZE)
        try:
            for item in pages:
                yield (item if isinstance(item, str) else item.name)[strip:], item
        except azure_exceptions.AzureError as exc:
            raise self._error(exc, "list") from None

    def list_entries(self, prefix, prune=None):
        # `prune` is a hint a flat listing cannot take: a blob listing has no directories.
        for path, blob in self._listing(self._sized_listing, prefix):
            yield path, blob.size, blob.modified

    def _sized_listing(self, **options):
        """`list_blobs(**options)` as (name, size, modified) items, read straight from the
        listing's XML: the SDK's generic model deserialisation of every blob's properties costs
        0.15-0.17 ms of CPU per blob (bench/README.md), more than the rest of a scan's Python.
        The SDK's own `list_blob_names` pager hands over that XML; this is that pager reading
        two more fields. It leans on two SDK internals (azure-storage-blob's pager class and
        azure-core's ItemPaged arguments; pinned in requirements.txt, checked by the Azurite
        tests); should either change, the public `list_blobs` serves instead."""
        pages = self.client.list_blob_names(**options)
        if _SizedPages is not None and hasattr(pages, "_args") and hasattr(pages, "_kwargs"):
            return ItemPaged(*pages._args, **{**pages._kwargs, "page_iterator_class": _SizedPages})
        _warn_pager_moved()
        return (
            _Listed(blob.name, blob.size, blob.last_modified.timestamp())
            for blob in self.client.list_blobs(**options)
        )

    def scan_entries(self):
        """The repositories by name only, then the blobs with their sizes.

        A scan on a two-core App Service plan is bound by the SDK's CPU. Its public
        `list_blob_names` turns a page of names into strings for a fifth of the CPU of
        `list_blobs`' generic model deserialisation (0.09 s against 0.60 s for the same 3,798
        paths). `list_entries` now reads sizes from the XML about as cheaply, but through SDK
        internals with `list_blobs` as the fallback; the names-only listing keeps the larger
        half of a registry's objects (its repositories) cheap even then. Only blobs need their
        sizes; the scan lists the few directories whose sizes or times it needs (uploads,
        untagged revisions) with `list_entries`. The repositories come first so that manifest
        reads run during the blob listing. Nothing else lives under docker/registry/v2/
        (distribution's paths.go).
        """
        for path, _ in self._listing(self.client.list_blob_names, REPOSITORIES):
            yield path, None, None
        yield from self.list_entries(BLOBS)

    def blob_size(self, digest):
        """The stored size of blob `digest` (sha256:<hex>), or None when it is not stored."""
        raw = digest_bytes(digest)
        if raw is None:
            return None
        try:
            return (
                self.client.get_blob_client(self.prefix + blob_path(raw)).get_blob_properties().size
            )
        except azure_exceptions.ResourceNotFoundError:
            return None
        except azure_exceptions.AzureError as exc:
            raise self._error(exc, "read") from None

    def read(self, path, max_bytes):
        try:
            return self.client.download_blob(
                self.prefix + path, offset=0, length=max_bytes + 1
            ).readall()
        except azure_exceptions.ResourceNotFoundError as exc:
            if _error_code(exc) == "ContainerNotFound":
                raise self._error(exc, "read") from None
            return None
        except azure_exceptions.HttpResponseError as exc:
            if exc.status_code == 416:  # a range request on an empty blob
                return b""
            raise self._error(exc, "read") from None
        except azure_exceptions.AzureError as exc:
            raise self._error(exc, "read") from None

    # --- Writes (the online collector) ---

    def delete_objects(self, paths, progress=None):
        """Delete every blob in `paths` (relative paths, streamed) through the Blob Batch API,
        WRITE_BATCH per request, `write_concurrency` requests at a time; returns how many were
        deleted. A blob already gone is not an error; sub-requests the service throttled or
        failed on its side (500, 503) are sent again up to `retries` times. Any other failed
        sub-request stops the run after the batches in flight: StorageError naming how many
        failed and why the first did. `progress(done)` now and then, `done` counting the paths
        handled so far. The count is of the service's 202 answers: a batch the SDK sent again
        after a time-out finds the blobs its first try deleted already gone, and those are
        not counted (figures such as bytes freed belong to the listing, not to this count).

        Reference: https://learn.microsoft.com/rest/api/storageservices/blob-batch
        """
        counter, outcome = _Progress(progress), _Outcome(self)
        with _Bounded(self.write_concurrency) as runner:
            for batch in _batches(paths, lambda batch: [_checked(path) for path in batch]):
                for result in runner.submit(self._delete_batch, batch):
                    counter.advance(outcome.add(*result))
                if outcome.failed:
                    break
            for result in runner.drain():
                counter.advance(outcome.add(*result))
        counter.finish()
        outcome.raise_if_failed()
        return outcome.succeeded

    def _delete_batch(self, paths):
        """(how many paths, how many deleted, [(path, status, code)] of the failures)."""
        count, deleted, failures, attempt = len(paths), 0, [], 0
        while True:
            retry = []
            for path, status, code in self._batch_statuses(paths):
                if 200 <= status < 300:
                    deleted += 1
                elif status == 404 and code != "ContainerNotFound":
                    continue  # gone already: what we wanted
                elif status in _RETRY_STATUSES and attempt < self.retries:
                    retry.append(path)
                else:
                    failures.append((path, status, code))
            if not retry:
                return count, deleted, failures
            time.sleep(self.retry_backoff * 2**attempt)
            attempt += 1
            paths = retry

    def _batch_statuses(self, paths):
        """(path, status, error code) of each Delete Blob sub-request of one batch request."""
        try:
            parts = list(
                self.client.delete_blobs(
                    *(self.prefix + path for path in paths), raise_on_any_failure=False
                )
            )
        except azure_exceptions.AzureError as exc:
            raise self._error(exc, "delete") from None
        if len(parts) != len(paths):
            raise StorageError(
                f"Azure storage answered a batch of {len(paths)} deletions in {self._where()} "
                f"with {len(parts)} results."
            )
        return [
            (path, part.status_code, part.headers.get("x-ms-error-code") or "")
            for path, part in zip(paths, parts, strict=True)
        ]

    def move_objects(self, moves, progress=None):
        """Move each (source, target) pair of `moves` (streamed) inside the container: a
        server-side copy (`write_concurrency` at a time), then the sources deleted through the
        Blob Batch API as `delete_objects` does. A target that exists is replaced
        (content-addressed: the same bytes); a missing source is skipped. Returns how many
        moved. A copy's target is written by the service, so its last-modified time is the
        move's. Failures as `delete_objects`; a source is deleted only once its copy has
        succeeded.

        Reference: https://learn.microsoft.com/rest/api/storageservices/copy-blob
        """
        counter, outcome = _Progress(progress), _Outcome(self, moving=True)
        copied = []  # sources whose copy succeeded, waiting for a delete batch

        def settle(results):
            # A copy's result is (False, source); a delete batch's is (True, figures).
            queue = list(results)
            while queue:
                is_delete, value = queue.pop()
                if is_delete:
                    counter.advance(outcome.add(*value))
                elif value is None:
                    counter.advance(1)  # the source was gone: skipped
                else:
                    copied.append(value)
                    if len(copied) >= WRITE_BATCH:
                        queue.extend(runner.submit(self._deleted_sources, copied[:WRITE_BATCH]))
                        del copied[:WRITE_BATCH]

        with _Bounded(self.write_concurrency) as runner:
            for batch in _batches(moves, _checked_moves):
                for source, target in batch:
                    settle(runner.submit(self._copied, source, target))
                if outcome.failed:
                    break
            settle(runner.drain())
            while copied and not outcome.failed:
                settle(runner.submit(self._deleted_sources, copied[:WRITE_BATCH]))
                del copied[:WRITE_BATCH]
                settle(runner.drain())
        counter.finish()
        outcome.raise_if_failed()
        return outcome.succeeded

    def _deleted_sources(self, paths):
        return True, self._delete_batch(paths)

    def _copied(self, source, target):
        """(False, source) once `target` holds a copy of `source`, (False, None) when there
        is no `source`. The source's URL carries the client's SAS, if any; with a key or an
        identity the copy request's own authorisation covers a source in the same account."""
        source_blob = self.client.get_blob_client(self.prefix + source)
        target_blob = self.client.get_blob_client(self.prefix + target)
        try:
            started = target_blob.start_copy_from_url(source_blob.url)
            status, copy_id = started.get("copy_status"), started.get("copy_id")
            deadline = time.monotonic() + self.copy_timeout
            pause = 0.05
            while status == "pending":
                if time.monotonic() > deadline:
                    with contextlib.suppress(azure_exceptions.AzureError):
                        target_blob.abort_copy(copy_id)
                    raise StorageError(
                        f"Copying {source} to {target} in {self._where()} did not finish within "
                        f"{self.copy_timeout:g} seconds."
                    )
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
                copy = target_blob.get_blob_properties().copy
                if copy.id != copy_id:
                    raise StorageError(
                        f"Copying {source} to {target} in {self._where()}: another copy to "
                        "the same target started meanwhile."
                    )
                status = copy.status
        except azure_exceptions.ResourceNotFoundError as exc:
            # 404 BlobNotFound, or CannotVerifyCopySource: the source is gone. The latter also
            # comes as a 403 when the source is not readable: that is a failure.
            if exc.status_code != 404 or _error_code(exc) == "ContainerNotFound":
                raise self._error(exc, "copy") from None
            return False, None
        except azure_exceptions.AzureError as exc:
            raise self._error(exc, "copy") from None
        if status != "success":
            raise StorageError(
                f"Copying {source} to {target} in {self._where()} ended with status {status!r}."
            )
        return False, source

    def write_object(self, path, data):
        """Create or replace the small blob `path` with `data` (one Put Blob: a reader sees
        the old or the new content)."""
        try:
            self.client.upload_blob(self.prefix + _checked(path), bytes(data), overwrite=True)
        except azure_exceptions.AzureError as exc:
            raise self._error(exc, "write") from None

    def object_exists(self, path):
        try:
            self.client.get_blob_client(self.prefix + _checked(path)).get_blob_properties()
            return True
        except azure_exceptions.ResourceNotFoundError as exc:
            if _error_code(exc) == "ContainerNotFound":
                raise self._error(exc, "read") from None
            return False
        except azure_exceptions.AzureError as exc:
            raise self._error(exc, "read") from None

    def _error(self, exc, action):
        """One readable sentence per failure the operator can fix; the detail goes to the log.

        Raised `from None`: the SDK's own messages can carry request URLs, SAS token included.
        """
        code = _error_code(exc)
        logger.warning(
            "azure %s failed on %s: %s %s", action, self._where(), type(exc).__name__, code
        )
        if isinstance(exc, azure_exceptions.ServiceResponseError):
            return StorageError(
                f"The storage account at {self.location} did not answer within "
                f"{self.timeout:g} seconds."
            )
        if isinstance(exc, azure_exceptions.ServiceRequestError):
            return StorageError(
                f"Could not connect to the storage account at {self.location}: check "
                "AZURE_STORAGE_ACCOUNT_URL / the account name, and that it is reachable."
            )
        return StorageError(
            self._refusal(
                code,
                getattr(exc, "status_code", None),
                action,
                isinstance(exc, azure_exceptions.ClientAuthenticationError),
            )
        )

    def _where(self):
        return f"container {self.container!r} at {self.location}"

    def _refusal(self, code, status, action, authentication=False):
        """The sentence for the service's answer `status`/`code` to an `action` ('list',
        'read', 'delete', 'write', 'copy'): of a whole request, or of one sub-request of a
        batch. `authentication`: the SDK classed it as an authentication failure."""
        where = self._where()
        if code == "ContainerNotFound":
            return (
                f"The container {self.container!r} does not exist at {self.location}: check "
                "AZURE_STORAGE_CONTAINER."
            )
        if authentication or code in ("AuthenticationFailed", "InvalidAuthenticationInfo"):
            return (
                f"Azure rejected the credentials for {where} ({code or 'authentication failed'}): "
                f"{_CREDENTIAL_HINTS[self.credential_kind]}"
            )
        if code == "AuthorizationFailure":
            # Azurite says this for a wrong key; Azure also for its firewall or network rules.
            return (
                f"Azure rejected the credentials for {where} (AuthorizationFailure): "
                f"{_CREDENTIAL_HINTS[self.credential_kind][:-1]}, and that the account's "
                "network rules let this host in."
            )
        if code.startswith(_PERMISSION_CODES):
            writes = action in ("delete", "write", "copy")
            if self.credential_kind == "default":
                role = "Contributor" if writes else "Reader"
                return (
                    f"Permission denied on {where} ({code}): give the portal's identity the "
                    f"Storage Blob Data {role} role on the container (role assignments can take "
                    "a few minutes to apply)."
                    + (" The online collector needs it to delete and move blobs." if writes else "")
                )
            if writes:
                return (
                    f"Permission denied on {where} ({code}): the online collector needs "
                    "credentials that may write and delete blobs (a SAS token with read, list, "
                    "write and delete, sp=rwdl; for an identity, the Storage Blob Data "
                    "Contributor role)."
                )
            return (
                f"Permission denied on {where} ({code}): the credentials must be allowed to list "
                "and read blobs."
            )
        return (
            f"Azure storage refused to {action} blobs in {where}"
            f" (HTTP {status}{', ' + code if code else ''})."
        )

    def list_blob_types(self, prefix):
        """(path, blob type) of every object under `prefix`: 'BlockBlob', 'AppendBlob', ...

        Only the registry upgrade check needs this (the scan does not care how a blob is
        stored); same listing, same errors as `list_entries`."""
        for path, blob in self._listing(self.client.list_blobs, prefix):
            yield path, str(getattr(blob.blob_type, "value", blob.blob_type))


class _Outcome:
    """What the delete batches of one run came to: the blobs deleted (moving: the sources
    deleted or already gone after their copy), the failures, and the first failure's
    sentence."""

    def __init__(self, backend, moving=False):
        self.backend, self.moving = backend, moving
        self.succeeded = self.tried = self.failed = 0
        self.first = None

    def add(self, count, deleted, failures):
        """Count one batch's result; returns how many paths it handled (for progress)."""
        self.tried += count
        self.succeeded += count - len(failures) if self.moving else deleted
        self.failed += len(failures)
        if failures and self.first is None:
            path, status, code = failures[0]
            self.first = (path, self.backend._refusal(code, status, "delete"))
            logger.warning(
                "azure delete failed for %d blobs on %s, first %s: HTTP %s %s",
                len(failures),
                self.backend._where(),
                path,
                status,
                code,
            )
        return count

    def raise_if_failed(self):
        if self.failed:
            path, sentence = self.first
            what = "moved blobs' sources" if self.moving else "blobs"
            raise StorageError(
                f"{self.failed:,} of {self.tried:,} {what} could not be deleted; the first, "
                f"{path}: {sentence}"
            )


class _Listed(NamedTuple):
    name: str
    size: int
    modified: float  # POSIX timestamp


def _sized_page_class():
    """The SDK's names-only pager, reading sizes and times too; None when it has moved."""
    try:
        from azure.storage.blob._list_blobs_helper import BlobNamesPaged
    except ImportError:
        return None

    class SizedPages(BlobNamesPaged):
        def _extract_data_cb(self, get_next_return):
            self.location_mode, self._response = get_next_return
            page = []
            try:
                for blob in self._response.iterfind("Blobs/Blob"):
                    name = blob.find("Name")
                    properties = blob.find("Properties")
                    page.append(
                        _Listed(
                            # A name with characters XML cannot carry comes percent-encoded.
                            unquote(name.text) if name.get("Encoded") == "true" else name.text,
                            int(properties.findtext("Content-Length")),
                            _parsed_http_date(properties.findtext("Last-Modified")),
                        )
                    )
            except (AttributeError, TypeError, ValueError):
                raise azure_exceptions.DecodeError(
                    "a blob listing page without the expected fields"
                ) from None
            return self._response.findtext("NextMarker") or None, page

    return SizedPages


_SizedPages = _sized_page_class()


@functools.cache
def _warn_pager_moved():
    # Once per process: a scan lists several directories.
    logger.warning("azure-storage-blob changed its pager; listing through list_blobs (slower)")


@functools.lru_cache(maxsize=4096)
def _parsed_http_date(text):
    # Blobs written together share their second: one parse each.
    return parsedate_to_datetime(text).timestamp()


def _environment_settings(endpoint_url):
    """What requests would read from the environment at every request, read once: the proxy
    for the storage endpoint (HTTPS_PROXY and the like, NO_PROXY applied) and a CA bundle
    (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE). With the SDK's default (`use_env_settings`)
    requests walks the whole environment twice per request, about 0.2 ms of CPU per read with
    an App Service-sized environment: a tenth of a manifest read's client cost in the scan.
    `endpoint_url` is called only when a proxy is configured."""
    found = {"use_env_settings": False}
    if any(scheme != "no" for scheme in urllib.request.getproxies()):
        proxies = requests.utils.get_environ_proxies(endpoint_url())
        if proxies:
            found["proxies"] = proxies
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        found["connection_verify"] = bundle
    return found


_CREDENTIAL_HINTS = {
    "connection_string": "check AZURE_STORAGE_CONNECTION_STRING.",
    "key": "check AZURE_STORAGE_ACCOUNT_KEY.",
    "sas": "check AZURE_STORAGE_SAS_TOKEN (its expiry, and that it allows read and list).",
    "default": (
        "the token of the portal's identity was refused: check that the managed identity "
        "(or `az login` account) belongs to the storage account's tenant."
    ),
}
AZURE_CREDENTIALS = tuple(_CREDENTIAL_HINTS)


def azure_credential_kind(credential="", connection_string="", account_key="", sas_token=""):
    """What AZURE_STORAGE_CREDENTIAL names; empty: the first secret that is set, as before."""
    credential = (credential or "").strip().lower()
    if credential:
        return credential
    if connection_string:
        return "connection_string"
    if account_key:
        return "key"
    if sas_token:
        return "sas"
    return ""


def azure_credential_problem(
    credential="",
    connection_string="",
    account_name="",
    account_key="",
    account_url="",
    sas_token="",
):
    """A sentence naming what to set when the Azure credential settings cannot work, else None."""
    kind = azure_credential_kind(credential, connection_string, account_key, sas_token)
    if kind == "":
        return (
            "Azure storage needs credentials: AZURE_STORAGE_CREDENTIAL=default (a managed "
            "identity), or AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME and "
            "AZURE_STORAGE_ACCOUNT_KEY."
        )
    if kind not in AZURE_CREDENTIALS:
        return (
            f"AZURE_STORAGE_CREDENTIAL={str(credential)[:40]!r} is not supported: set it to "
            "default, key, connection_string or sas."
        )
    if kind == "connection_string" and not connection_string:
        return "AZURE_STORAGE_CREDENTIAL is connection_string: set AZURE_STORAGE_CONNECTION_STRING."
    if kind != "connection_string" and not (account_name or account_url):
        return (
            f"AZURE_STORAGE_CREDENTIAL is {kind}: set AZURE_STORAGE_ACCOUNT_NAME (or "
            "AZURE_STORAGE_ACCOUNT_URL) to the storage account."
        )
    if kind == "key" and not (account_name and account_key):
        return (
            "AZURE_STORAGE_CREDENTIAL is key: set AZURE_STORAGE_ACCOUNT_NAME and "
            "AZURE_STORAGE_ACCOUNT_KEY."
        )
    if kind == "sas" and not sas_token:
        return "AZURE_STORAGE_CREDENTIAL is sas: set AZURE_STORAGE_SAS_TOKEN."
    if kind == "default" and account_url.lower().startswith("http://"):
        # The SDK refuses to send a bearer token without TLS, so say it before any call.
        return (
            "AZURE_STORAGE_CREDENTIAL=default needs an https:// AZURE_STORAGE_ACCOUNT_URL: Azure "
            "sends identity tokens over TLS only."
        )
    return None


def _default_azure_credential(timeout):
    # Imported here: azure-identity pulls in msal, which only this credential needs.
    from azure.identity import DefaultAzureCredential

    # The timeouts reach each credential's own HTTP pipeline (the managed identity endpoint)
    # and the developer tools it may start (`az`), so a host without an identity fails fast.
    return DefaultAzureCredential(
        connection_timeout=timeout, read_timeout=timeout, process_timeout=timeout
    )


class _IdentityCredential:
    """A token credential that turns the identity's own failures into a StorageError.

    Without it a missing managed identity surfaces as the storage call's authentication error,
    and the page would blame the storage account. The chain's message is logged, not shown:
    it lists every credential it tried, which is for the operator's log, not the page.
    """

    def __init__(self, inner):
        self.inner = inner

    def get_token(self, *scopes, **kwargs):
        return self._call(self.inner.get_token, scopes, kwargs)

    def get_token_info(self, *scopes, **kwargs):
        if not hasattr(self.inner, "get_token_info"):
            return self._call(self.inner.get_token, scopes, {})
        return self._call(self.inner.get_token_info, scopes, kwargs)

    def _call(self, method, scopes, kwargs):
        try:
            return method(*scopes, **kwargs)
        except azure_exceptions.AzureError as exc:
            logger.warning("azure identity: no token: %s: %s", type(exc).__name__, exc)
            raise StorageError(
                "The portal found no Azure identity to sign in with "
                "(AZURE_STORAGE_CREDENTIAL=default): turn on the app's managed identity "
                "(App Service: Identity; set AZURE_CLIENT_ID for a user-assigned one), or "
                "sign in with `az login` where the portal runs."
            ) from None

    def close(self):
        close = getattr(self.inner, "close", None)
        if close:
            close()


def _error_code(exc):
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def backend_kind():
    """STORAGE_BACKEND as the code compares it: 'filesystem', 'azure' or what else was set."""
    return (settings.STORAGE_BACKEND or "").strip().lower()


_NO_CONTAINER = "AZURE_STORAGE_CONTAINER is not set: name the registry's blob container."


def settings_problems():
    """Every reason the storage settings cannot work, as (what, sentence) pairs, in order.

    `what` is 'backend', 'root', 'container' or 'credentials'. Cheap and offline (no call to
    the storage): the one home of these rules, for the system checks, the storage page and
    `get_backend()`.
    """
    kind = backend_kind()
    if kind == "filesystem":
        if not os.path.isdir(settings.STORAGE_FILESYSTEM_ROOT):
            return [
                (
                    "root",
                    f"STORAGE_FILESYSTEM_ROOT ({settings.STORAGE_FILESYSTEM_ROOT}) is not a "
                    "directory: set it to the registry's storage rootdirectory.",
                )
            ]
        return []
    if kind == "azure":
        problems = []
        if not settings.AZURE_STORAGE_CONTAINER:
            problems.append(("container", _NO_CONTAINER))
        credentials = azure_credential_problem(*azure_credential_settings())
        if credentials:
            problems.append(("credentials", credentials))
        return problems
    return [
        (
            "backend",
            f"STORAGE_BACKEND={settings.STORAGE_BACKEND!r} is not supported: set it to "
            "'filesystem' or 'azure'.",
        )
    ]


def configuration_problem():
    """The first of `settings_problems()` as a sentence for the page, else None."""
    problems = settings_problems()
    return problems[0][1] if problems else None


def azure_credential_settings():
    return (
        settings.AZURE_STORAGE_CREDENTIAL,
        settings.AZURE_STORAGE_CONNECTION_STRING,
        settings.AZURE_STORAGE_ACCOUNT_NAME,
        settings.AZURE_STORAGE_ACCOUNT_KEY,
        settings.AZURE_STORAGE_ACCOUNT_URL,
        settings.AZURE_STORAGE_SAS_TOKEN,
    )


def get_backend():
    """The backend `STORAGE_BACKEND` names, built from settings. Raises StorageError."""
    kind = backend_kind()
    if kind == "filesystem":
        # A missing root is reported by list_entries, when the scan needs it.
        return FilesystemStorage(settings.STORAGE_FILESYSTEM_ROOT)
    if kind == "azure":
        return AzureStorage(
            container=settings.AZURE_STORAGE_CONTAINER,
            connection_string=settings.AZURE_STORAGE_CONNECTION_STRING,
            account_name=settings.AZURE_STORAGE_ACCOUNT_NAME,
            account_key=settings.AZURE_STORAGE_ACCOUNT_KEY,
            account_url=settings.AZURE_STORAGE_ACCOUNT_URL,
            root_directory=settings.AZURE_STORAGE_ROOT_DIRECTORY,
            timeout=settings.STORAGE_TIMEOUT,
            credential=settings.AZURE_STORAGE_CREDENTIAL,
            sas_token=settings.AZURE_STORAGE_SAS_TOKEN,
            write_concurrency=settings.STORAGE_WRITE_CONCURRENCY,
        )
    raise StorageError(settings_problems()[0][1])
