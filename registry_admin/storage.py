"""The registry's blob storage, read for usage figures: the only module that imports azure.*.

Two backends share one narrow interface, picked by `STORAGE_BACKEND` like Django's mail
backends: `list_entries(prefix)` yields `(path, size, last_modified)` for every object under
`prefix` (paths relative to the registry's root directory, last_modified as a POSIX timestamp)
and `read(path, max_bytes)` returns a small object's bytes (None when it is absent).

`scan()` turns one streaming pass over `docker/registry/v2/` into usage figures. The layout
(see https://github.com/distribution/distribution/blob/release/2.8/registry/storage/paths.go):

    blobs/sha256/<xx>/<hex>/data                                  a blob and its size
    repositories/<name>/_layers/sha256/<hex>/link                 a blob linked into a repository
    repositories/<name>/_manifests/revisions/sha256/<hex>/link    a manifest linked (not deleted)
    repositories/<name>/_uploads/<uuid>/...                       an unfinished upload

Everything but reachability comes from paths alone. What `registry garbage-collect` would free
needs its mark phase (registry/storage/garbagecollect.go): every manifest still linked in some
repository is marked with the blobs its `References()` name (config and layers; an index's
child manifests), so the scan reads those manifests and nothing else, and only those an
optional cache (what each manifest references: immutable, as manifests are content-addressed)
does not know yet.

Memory stays flat per blob: digests live in one bytearray (32 bytes each), sizes in an
array, per-repository links as arrays of blob numbers; no Python object per blob.

Raises `StorageError`, whose message is a sentence for the page.
"""

import json
import logging
import os
import re
import time
from array import array
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from azure.core import exceptions as azure_exceptions
from azure.storage.blob import ContainerClient, ExponentialRetry
from django.conf import settings

logger = logging.getLogger(__name__)

V2_PREFIX = "docker/registry/v2/"
_BLOBS = V2_PREFIX + "blobs/sha256/"
_REPOSITORIES = V2_PREFIX + "repositories/"
_LAYER_LINK = "_layers/sha256/"
_REVISION_LINK = "_manifests/revisions/sha256/"
_UPLOADS = "_uploads/"
_TAG_LINKS = "_manifests/tags/"
_CURRENT_LINK = "/current/link"
_BLOBS_LEN, _REPOSITORIES_LEN = len(_BLOBS), len(_REPOSITORIES)
# The registry refuses manifests above 4 MiB on push; anything bigger is not a manifest.
MANIFEST_MAX_BYTES = 4 * 1024 * 1024
# Listing page size for Azure (the service's maximum).
AZURE_PAGE_SIZE = 5000
# Manifest digests looked up in the reference cache (and new ones stored) per query.
CACHE_BATCH = 500
# Repository names as the registry accepts them (distribution's reference grammar); other
# directories under repositories/ are not the registry's and are skipped.
_REPOSITORY_NAME = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_HEX64 = re.compile(r"[0-9a-f]{64}")


# Azure error codes meaning "these credentials may not do that" (the list or the read).
_PERMISSION_CODES = (
    "AuthorizationPermission",
    "AuthorizationResourceTypeMismatch",
    "AuthorizationServiceMismatch",
    "AuthorizationProtocolMismatch",
    "AuthorizationSourceIPMismatch",
    "InsufficientAccountPermissions",
)


class StorageError(Exception):
    """Listing or reading the registry's storage failed; str(error) is a sentence for the page."""


# --- Backends ---


class FilesystemStorage:
    """The filesystem driver's `rootdirectory`, walked in sorted order without following links."""

    kind = "filesystem"

    def __init__(self, root):
        self.root = os.path.abspath(root)

    @property
    def location(self):
        return self.root

    def list_entries(self, prefix):
        """Files under `prefix` in the order of their full paths, as Azure lists blobs."""
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
                levels.append(iter(self._sorted_items(path, relative)))
            else:
                yield relative, size, modified

    @staticmethod
    def _sorted_items(directory, relative):
        """(relative path, path, size, mtime) of a directory's entries, sorted like full paths;
        a subdirectory has size None and its relative path ends with '/', as it sorts."""
        try:
            with os.scandir(directory) as scanned:
                entries = list(scanned)
        except FileNotFoundError:
            return []  # removed while we walked (an upload finished, a GC ran)
        except PermissionError as exc:
            raise StorageError(
                f"Permission denied reading {directory}: the portal needs read access to the "
                "registry's whole storage tree."
            ) from exc
        except OSError as exc:
            raise StorageError(f"Could not read {directory}: {exc.strerror}.") from exc
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
        raw = _digest_bytes(digest)
        if raw is None:
            return None
        try:
            return os.stat(os.path.join(self.root, _blob_path(raw))).st_size
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
        except PermissionError as exc:
            raise StorageError(
                f"Permission denied reading {path}: the portal needs read access to the "
                "registry's whole storage tree."
            ) from exc
        except OSError as exc:
            raise StorageError(f"Could not read {path}: {exc.strerror}.") from exc


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
    ):
        if not container:
            raise StorageError("AZURE_STORAGE_CONTAINER is not set: name the registry's container.")
        self.container = container
        self.prefix = root_directory.strip("/") + "/" if root_directory.strip("/") else ""
        self.timeout = timeout
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
        try:
            if self.credential_kind == "connection_string":
                self.client = ContainerClient.from_connection_string(
                    connection_string, container, **options
                )
            elif self.credential_kind == "key":
                credential = {"account_name": account_name, "account_key": account_key}
                self.client = ContainerClient(url, container, credential=credential, **options)
            elif self.credential_kind == "sas":
                self.client = ContainerClient(
                    url, container, credential=sas_token.lstrip("?"), **options
                )
            else:
                identity = _IdentityCredential(
                    token_credential or _default_azure_credential(timeout)
                )
                self.client = ContainerClient(url, container, credential=identity, **options)
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

    def list_entries(self, prefix):
        strip = len(self.prefix)
        pages = self.client.list_blobs(
            name_starts_with=self.prefix + prefix, results_per_page=AZURE_PAGE_SIZE
        )
        try:
            for blob in pages:
                yield blob.name[strip:], blob.size, blob.last_modified.timestamp()
        except azure_exceptions.AzureError as exc:
            raise self._error(exc, "list") from None

    def blob_size(self, digest):
        """The stored size of blob `digest` (sha256:<hex>), or None when it is not stored."""
        raw = _digest_bytes(digest)
        if raw is None:
            return None
        try:
            return (
                self.client.get_blob_client(self.prefix + _blob_path(raw))
                .get_blob_properties()
                .size
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

    def _error(self, exc, action):
        """One readable sentence per failure the operator can fix; the detail goes to the log.

        Raised `from None`: the SDK's own messages can carry request URLs, SAS token included.
        """
        code = _error_code(exc)
        where = f"container {self.container!r} at {self.location}"
        logger.warning("azure %s failed on %s: %s %s", action, where, type(exc).__name__, code)
        if code == "ContainerNotFound":
            return StorageError(
                f"The container {self.container!r} does not exist at {self.location}: check "
                "AZURE_STORAGE_CONTAINER."
            )
        if code == "AuthenticationFailed" or isinstance(
            exc, azure_exceptions.ClientAuthenticationError
        ):
            return StorageError(
                f"Azure rejected the credentials for {where} ({code or 'authentication failed'}): "
                f"{_CREDENTIAL_HINTS[self.credential_kind]}"
            )
        if code == "AuthorizationFailure":
            # Azurite says this for a wrong key; Azure also for its firewall or network rules.
            return StorageError(
                f"Azure rejected the credentials for {where} (AuthorizationFailure): "
                f"{_CREDENTIAL_HINTS[self.credential_kind][:-1]}, and that the account's "
                "network rules let this host in."
            )
        if code.startswith(_PERMISSION_CODES):
            if self.credential_kind == "default":
                return StorageError(
                    f"Permission denied on {where} ({code}): give the portal's identity the "
                    "Storage Blob Data Reader role on the container (role assignments can take "
                    "a few minutes to apply)."
                )
            return StorageError(
                f"Permission denied on {where} ({code}): the credentials must be allowed to list "
                "and read blobs."
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
        status = getattr(exc, "status_code", None)
        return StorageError(
            f"Azure storage refused to {action} blobs in {where}"
            f" (HTTP {status}{', ' + code if code else ''})."
        )

    def list_blob_types(self, prefix):
        """(path, blob type) of every object under `prefix`: 'BlockBlob', 'AppendBlob', ...

        Only the registry upgrade check needs this (the scan does not care how a blob is
        stored); same listing, same errors as `list_entries`."""
        strip = len(self.prefix)
        pages = self.client.list_blobs(
            name_starts_with=self.prefix + prefix, results_per_page=AZURE_PAGE_SIZE
        )
        try:
            for blob in pages:
                yield blob.name[strip:], str(getattr(blob.blob_type, "value", blob.blob_type))
        except azure_exceptions.AzureError as exc:
            raise self._error(exc, "list") from None


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
# Azure Storage's OAuth scope: the token is for the storage service, not for one account.
STORAGE_SCOPE = "https://storage.azure.com/.default"


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


def configuration_problem():
    """A sentence naming what to set when the storage settings cannot work, else None.

    Cheap and offline (no call to the storage): for the storage page and the system checks.
    """
    kind = (settings.STORAGE_BACKEND or "").strip().lower()
    if kind == "filesystem":
        if not os.path.isdir(settings.STORAGE_FILESYSTEM_ROOT):
            return (
                f"STORAGE_FILESYSTEM_ROOT ({settings.STORAGE_FILESYSTEM_ROOT}) is not a "
                "directory: set it to the registry's storage rootdirectory."
            )
        return None
    if kind == "azure":
        if not settings.AZURE_STORAGE_CONTAINER:
            return "AZURE_STORAGE_CONTAINER is not set: name the registry's blob container."
        return azure_credential_problem(*azure_credential_settings())
    return (
        f"STORAGE_BACKEND={settings.STORAGE_BACKEND!r} is not supported: set it to "
        "'filesystem' or 'azure'."
    )


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
    kind = (settings.STORAGE_BACKEND or "").strip().lower()
    if kind == "filesystem":
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
        )
    raise StorageError(
        f"STORAGE_BACKEND={settings.STORAGE_BACKEND!r} is not supported: set it to "
        "'filesystem' or 'azure'."
    )


# --- Results ---


@dataclass(frozen=True)
class RepositoryUsage:
    """One repository's share of the blobs, counting every stored blob it links.

    `referenced_bytes` covers its layer links (layers and configs) and its linked manifests;
    `unique_bytes` the part no other repository links; `reclaimable_bytes` the part that no
    linked manifest reaches any more (deleted images awaiting garbage collection).
    """

    name: str
    referenced_bytes: int
    unique_bytes: int
    shared_bytes: int
    reclaimable_bytes: int
    blob_count: int
    manifest_count: int


@dataclass(frozen=True)
class UntaggedRevision:
    """A manifest revision of `repository` that no tag reaches, directly or as a child.

    `reclaimable_bytes`: what the collector frees once every untagged revision is removed,
    counted once (on the first revision that holds the blob); `is_child`: a child of an
    untagged index, which goes with its parent.
    """

    repository: str
    digest: str
    linked_at: float | None
    reclaimable_bytes: int
    is_child: bool


@dataclass(frozen=True)
class ScanResult:
    total_bytes: int
    blob_count: int
    # Distinct bytes linked by at least one repository, and what sharing saved against
    # storing each repository's blobs separately.
    linked_bytes: int
    dedup_saved_bytes: int
    reclaimable_bytes: int
    reclaimable_count: int
    upload_count: int
    upload_bytes: int
    oldest_upload_started: float | None
    # Distinct linked manifests; how many were read from storage (the rest came from the
    # cache); how many of those were not manifests (their references are unknown).
    manifest_count: int
    manifests_read: int
    unreadable_manifests: int
    missing_blob_links: int
    entry_count: int
    skipped_entries: int
    duration_seconds: float
    repositories: tuple = field(default_factory=tuple)
    # UntaggedRevision entries: revisions no tag reaches (directly or through a tagged index).
    untagged: tuple = field(default_factory=tuple)

    def as_dict(self):
        return asdict(self)


# --- The scan ---


class _BlobTable:
    """Digests grouped by their first two bytes, with a 65,536-bucket index: `number(digest)`
    costs one memchr over its bucket (~15 digests per million blobs) instead of a dict entry
    per blob. Blob numbers are positions in this table."""

    def __init__(self, digests, sizes):
        count = len(sizes)
        buckets = array(
            "H", (high << 8 | low for high, low in zip(digests[0::32], digests[1::32], strict=True))
        )
        starts = array("q", bytes(8 * 65537))
        for bucket in buckets:
            starts[bucket + 1] += 1
        for bucket in range(65536):
            starts[bucket + 1] += starts[bucket]
        if any(buckets[i] > buckets[i + 1] for i in range(count - 1)):
            # Not listed in digest order (Azure and the filesystem walk both are): counting sort.
            grouped, grouped_sizes = bytearray(len(digests)), array("q", bytes(8 * count))
            free = array("q", starts)
            for source, bucket in enumerate(buckets):
                target = free[bucket]
                free[bucket] = target + 1
                grouped[target * 32 : target * 32 + 32] = digests[source * 32 : source * 32 + 32]
                grouped_sizes[target] = sizes[source]
            digests, sizes = grouped, grouped_sizes
        self.digests = digests
        self.sizes = sizes
        self.starts = starts

    def __len__(self):
        return len(self.sizes)

    def number(self, digest):
        """The blob's number, or -1 when no such blob is stored."""
        bucket = (digest[0] << 8) | digest[1]
        end = self.starts[bucket + 1] * 32
        position = self.digests.find(digest, self.starts[bucket] * 32, end)
        while position != -1 and position % 32:
            position = self.digests.find(digest, position + 1, end)
        return -1 if position == -1 else position // 32

    def numbers(self, raw_digests):
        """Blob numbers for the 32-byte digests in `raw_digests`; -1 for each one not stored."""
        return (self.number(raw_digests[i : i + 32]) for i in range(0, len(raw_digests), 32))


def manifest_references(content):
    """The digests a manifest's `References()` names, as GC's mark phase sees them.

    Image manifests (Docker schema2, OCI): config and layers; indexes and manifest lists: their
    child manifests; Docker schema1: its fsLayers. Returns None when `content` is not a manifest.
    """
    try:
        document = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(document, dict):
        return None
    descriptors = []
    if isinstance(document.get("config"), dict):
        descriptors.append(document["config"].get("digest"))
    for key in ("layers", "manifests"):
        for item in document.get(key) or ():
            if isinstance(item, dict):
                descriptors.append(item.get("digest"))
    for item in document.get("fsLayers") or ():
        if isinstance(item, dict):
            descriptors.append(item.get("blobSum"))
    return [d for d in descriptors if isinstance(d, str)]


def _digest_bytes(digest):
    """32 raw bytes of a `sha256:<hex>` digest, or None for other algorithms or junk."""
    if not digest.startswith("sha256:") or not _HEX64.fullmatch(digest, 7):
        return None
    return bytes.fromhex(digest[7:])


def _blob_path(raw_digest):
    hex_digest = raw_digest.hex()
    return f"{_BLOBS}{hex_digest[:2]}/{hex_digest}/data"


class _ManifestReader:
    """Finds what each linked manifest references while the listing goes on.

    Each distinct manifest is looked up in `cache` first (manifests are content-addressed, so
    what one references never changes), then read from storage with at most `concurrency`
    reads in flight. Results are appended to one bytearray of records (manifest digest,
    length, referenced digests) and matched to blob numbers once the listing is complete.
    """

    def __init__(self, read, concurrency, cache=None):
        self.read = read
        self.concurrency = max(1, concurrency)
        self.pool = ThreadPoolExecutor(self.concurrency) if self.concurrency > 1 else None
        self.cache = cache
        self.pending = deque()
        self.requested = set()
        self.waiting = []
        self.fresh = {}
        self.records = bytearray()
        self.read_count = 0
        self.unreadable = 0

    def request(self, raw_digest):
        if raw_digest in self.requested:
            return
        self.requested.add(raw_digest)
        if self.cache is None:
            self._read(raw_digest)
            return
        self.waiting.append(raw_digest)
        if len(self.waiting) >= CACHE_BATCH:
            self._look_up()

    def _look_up(self):
        batch, self.waiting = self.waiting, []
        known = self.cache.lookup(batch)
        for raw_digest in batch:
            references = known.get(raw_digest)
            if references is None:
                self._read(raw_digest)
            else:
                self._record(raw_digest, references)

    def _read(self, raw_digest):
        if self.pool is None:
            self._collect(raw_digest, self._fetch(raw_digest))
            return
        self.pending.append((raw_digest, self.pool.submit(self._fetch, raw_digest)))
        while len(self.pending) > 4 * self.concurrency:
            raw, future = self.pending.popleft()
            self._collect(raw, future.result())

    def _fetch(self, raw_digest):
        content = self.read(_blob_path(raw_digest), MANIFEST_MAX_BYTES)
        if content is None:
            return None  # the revision links a blob that is gone: GC skips it too
        if len(content) > MANIFEST_MAX_BYTES:
            return False
        references = manifest_references(content)
        if references is None:
            return False
        return b"".join(filter(None, map(_digest_bytes, references)))

    def _collect(self, raw_digest, outcome):
        if outcome is None:
            return
        self.read_count += 1
        if outcome is False:
            self.unreadable += 1
            return
        self._record(raw_digest, outcome)
        if self.cache is not None:
            self.fresh[raw_digest] = outcome
            if len(self.fresh) >= CACHE_BATCH:
                self.cache.store(self.fresh)
                self.fresh = {}

    def _record(self, raw_digest, references):
        self.records += raw_digest + len(references).to_bytes(4, "little") + references

    def finish(self):
        """Wait for every read; then bring the cache up to date (only after a whole listing)."""
        try:
            if self.waiting:
                self._look_up()
            while self.pending:
                raw, future = self.pending.popleft()
                self._collect(raw, future.result())
        finally:
            self.close()
        if self.cache is not None:
            if self.fresh:
                self.cache.store(self.fresh)
                self.fresh = {}
            self.cache.prune(self.requested)

    def close(self):
        if self.pool is not None:
            for _, future in self.pending:
                future.cancel()
            self.pool.shutdown(wait=True)
            self.pool = None

    def marked_references(self, table):
        """Blob numbers referenced by manifests that are stored (GC skips a missing one)."""
        records, position = self.records, 0
        while position < len(records):
            manifest = records[position : position + 32]
            length = int.from_bytes(records[position + 32 : position + 36], "little")
            start, position = position + 36, position + 36 + length
            if table.number(manifest) >= 0:
                yield from table.numbers(records[start:position])


def scan(entries, read, progress=None, read_concurrency=1, cache=None, progress_every=20000):
    """Usage figures from one pass over `entries` ((path, size, last_modified) under V2_PREFIX).

    `read(path, max_bytes)` fetches a linked manifest. `cache`, optional, remembers what
    manifests reference between scans: `lookup([digest]) -> {digest: references}`,
    `store({digest: references})` and `prune(live digests)`, digests as 32 raw bytes and
    references as their concatenation. `progress(done, total, message)` is called every
    `progress_every` entries and once per stage. Returns a ScanResult.
    """
    started = time.monotonic()
    listing = _Listing()
    reader = _ManifestReader(read, read_concurrency, cache)
    try:
        listing.consume(entries, reader, progress, progress_every)
        if progress:
            progress(listing.entry_count, None, "Listing done; reading the last manifests")
        reader.finish()
    finally:
        reader.close()
    if progress:
        progress(listing.entry_count, None, f"Reading {len(listing.tag_links):,} tag links")
    tagged = _read_tag_links(listing, read, read_concurrency)
    if progress:
        progress(listing.entry_count, listing.entry_count, "Adding up")
    table = _BlobTable(listing.digests, listing.sizes)
    listing.digests = listing.sizes = None
    return _tally(table, listing, reader, started, tagged)


def _read_tag_links(listing, read, concurrency):
    """{repository number: set of 32-byte digests its tags point at now}."""

    def one(item):
        content = read(item[1], 200)
        if not content:
            return item[0], None
        text = content.decode("ascii", "replace").strip()
        return item[0], _digest_bytes(text)

    tagged = {}
    links, listing.tag_links = listing.tag_links, None
    if concurrency > 1 and len(links) > 1:
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(one, links, chunksize=64))
    else:
        results = map(one, links)
    for repository, raw in results:
        if raw is not None:
            tagged.setdefault(repository, set()).add(raw)
    return tagged


class _Listing:
    """What the paths say: blobs, each repository's links, uploads. Compact by design."""

    def __init__(self):
        self.digests, self.sizes = bytearray(), array("q")
        self.repository_ids, self.names, self.rejected_names = {}, [], set()
        self.layer_links, self.revision_links = [], []
        self.revision_times, self.tag_links = [], []
        self.uploads = {}
        self.entry_count = self.skipped = 0

    def consume(self, entries, reader, progress, progress_every):
        # One tight loop with everything in locals: this runs once per stored object.
        digests, sizes, repository_ids = self.digests, self.sizes, self.repository_ids
        layer_links, revision_links, uploads = self.layer_links, self.revision_links, self.uploads
        revision_times, tag_links = self.revision_times, self.tag_links
        layer_end, revision_end = len(_LAYER_LINK) + 64, len(_REVISION_LINK) + 64
        count = skipped = 0
        for path, size, modified in entries:
            count += 1
            if progress and not count % progress_every:
                progress(count, None, f"Listed {count:,} objects ({len(sizes):,} blobs)")
            if path.startswith(_BLOBS):
                # "<xx>/<64 hex>/data"
                rest = path[_BLOBS_LEN:]
                raw = _hex_digest(rest[3:67]) if len(rest) == 72 and rest[67:] == "/data" else None
                if raw is None or rest[:2] != rest[3:5]:
                    skipped += 1
                    continue
                digests += raw
                sizes.append(size)
                continue
            if not path.startswith(_REPOSITORIES):
                skipped += 1
                continue
            rest = path[_REPOSITORIES_LEN:]
            cut = rest.find("/_")
            repository = repository_ids.get(rest[:cut])
            if repository is None:
                repository = self._new_repository(rest[:cut]) if cut > 0 else None
                if repository is None:
                    skipped += 1
                    continue
            tail = rest[cut + 1 :]
            if tail.startswith(_LAYER_LINK):
                raw = _link_digest(tail, len(_LAYER_LINK), layer_end)
                if raw is None:
                    skipped += 1
                else:
                    layer_links[repository] += raw
            elif tail.startswith(_REVISION_LINK):
                raw = _link_digest(tail, len(_REVISION_LINK), revision_end)
                if raw is None:
                    skipped += 1
                else:
                    revision_links[repository] += raw
                    revision_times[repository].append(modified or 0.0)
                    reader.request(raw)
            elif tail.startswith(_TAG_LINKS) and tail.endswith(_CURRENT_LINK):
                tag_links.append((repository, path))
            elif tail.startswith(_UPLOADS):
                key = (repository, tail[len(_UPLOADS) :].split("/", 1)[0])
                upload = uploads.get(key)
                if upload is None:
                    uploads[key] = [size, modified]
                else:
                    upload[0] += size
                    upload[1] = min(upload[1], modified)
            # Tag links (_manifests/tags/...) need no counting: GC marks every linked revision.
        self.entry_count += count
        self.skipped += skipped

    def _new_repository(self, name):
        if name in self.rejected_names:
            return None
        if len(name) > 255 or _REPOSITORY_NAME.fullmatch(name) is None:
            if len(self.rejected_names) < 1000:
                self.rejected_names.add(name)
            return None
        repository = self.repository_ids[name] = len(self.names)
        self.names.append(name)
        self.layer_links.append(bytearray())
        self.revision_links.append(bytearray())
        self.revision_times.append(array("d"))
        return repository


def _hex_digest(text):
    """32 raw bytes from 64 hex characters, or None (fromhex would also skip spaces)."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


def _link_digest(tail, offset, end):
    """The 32-byte digest in '<kind prefix><64 hex>/link', or None."""
    if len(tail) != end + 5 or tail[end:] != "/link":
        return None
    return _hex_digest(tail[offset:end])


def _tally(table, listing, reader, started, tagged=None):
    sizes, count = table.sizes, len(table)
    untagged = _untagged(table, listing, reader, tagged or {})
    refcount = array("i", bytes(4 * count))
    # The last repository that counted each blob: dedups a repository's links without a set.
    last_counted = array("i", [-1]) * count
    marked = bytearray(count)
    linked, manifest_counts, missing, distinct_manifests = [], [], 0, 0
    for repository in range(len(listing.names)):
        numbers, manifests = array("i"), 0
        for number in table.numbers(listing.revision_links[repository]):
            if number < 0:
                missing += 1
                continue
            if not marked[number]:
                marked[number] = 1  # GC marks every manifest still linked as a revision
                distinct_manifests += 1
            manifests += 1
            if last_counted[number] != repository:
                last_counted[number] = repository
                refcount[number] += 1
                numbers.append(number)
        for number in table.numbers(listing.layer_links[repository]):
            if number < 0:
                missing += 1
            elif last_counted[number] != repository:
                last_counted[number] = repository
                refcount[number] += 1
                numbers.append(number)
        listing.revision_links[repository] = listing.layer_links[repository] = None
        linked.append(numbers)
        manifest_counts.append(manifests)
    del last_counted
    for number in reader.marked_references(table):
        if number >= 0:
            marked[number] = 1
    repositories = [
        _repository_usage(name, numbers, manifests, sizes, refcount, marked)
        for name, numbers, manifests in zip(listing.names, linked, manifest_counts, strict=True)
    ]
    repositories.sort(key=lambda usage: usage.name)
    reclaimable_bytes = reclaimable_count = linked_bytes = 0
    for number in range(count):
        if not marked[number]:
            reclaimable_bytes += sizes[number]
            reclaimable_count += 1
        if refcount[number]:
            linked_bytes += sizes[number]
    uploads = listing.uploads.values()
    return ScanResult(
        total_bytes=sum(sizes),
        blob_count=count,
        linked_bytes=linked_bytes,
        dedup_saved_bytes=sum(r.referenced_bytes for r in repositories) - linked_bytes,
        reclaimable_bytes=reclaimable_bytes,
        reclaimable_count=reclaimable_count,
        upload_count=len(uploads),
        upload_bytes=sum(upload[0] for upload in uploads),
        oldest_upload_started=min((upload[1] for upload in uploads), default=None),
        manifest_count=distinct_manifests,
        manifests_read=reader.read_count,
        unreadable_manifests=reader.unreadable,
        missing_blob_links=missing,
        entry_count=listing.entry_count,
        skipped_entries=listing.skipped,
        duration_seconds=round(time.monotonic() - started, 3),
        repositories=tuple(repositories),
        untagged=tuple(untagged),
    )


def _untagged(table, listing, reader, tagged):
    """UntaggedRevisions, with what removing them all would let the collector free.

    Per repository: the revisions minus what its tags reach (a tag's manifest and, for an
    index, its children, recursively). A blob counts as reclaimable when no revision that
    stays (in any repository) marks it and the collector would not free it already.
    """
    references = {}
    records, position = reader.records, 0
    while position < len(records):
        manifest = bytes(records[position : position + 32])
        length = int.from_bytes(records[position + 32 : position + 36], "little")
        start, position = position + 36, position + 36 + length
        references[manifest] = bytes(records[start:position])
    found, staying = [], []
    for repository, name in enumerate(listing.names):
        links, times = listing.revision_links[repository], listing.revision_times[repository]
        revisions = {bytes(links[i : i + 32]): times[i // 32] for i in range(0, len(links), 32)}
        reached, queue = set(), [d for d in tagged.get(repository, ()) if d in revisions]
        while queue:
            digest = queue.pop()
            if digest in reached:
                continue
            reached.add(digest)
            refs = references.get(digest, b"")
            queue.extend(
                child
                for child in (refs[i : i + 32] for i in range(0, len(refs), 32))
                if child in revisions and child not in reached
            )
        lost = [d for d in revisions if d not in reached]
        staying.extend(d for d in revisions if d in reached)
        children = set()
        for digest in lost:
            refs = references.get(digest, b"")
            children.update(refs[i : i + 32] for i in range(0, len(refs), 32))
        found.extend((name, d, revisions[d], d in children) for d in lost)
    if not found:
        return []
    # Listing order must not change the figures: parents first, then by name and digest.
    found.sort(key=lambda item: (item[0], item[3], item[1]))
    kept = bytearray(len(table))
    for digest in staying:
        number = table.number(digest)
        if number >= 0:
            kept[number] = 1
            refs = references.get(digest, b"")
            for ref in table.numbers(refs):
                if ref >= 0:
                    kept[ref] = 1
    counted = bytearray(len(table))
    result = []
    for name, digest, linked_at, is_child in found:
        total = 0
        for number in (table.number(digest), *table.numbers(references.get(digest, b""))):
            if number >= 0 and not kept[number] and not counted[number]:
                counted[number] = 1
                total += table.sizes[number]
        result.append(
            UntaggedRevision(name, "sha256:" + digest.hex(), linked_at or None, total, is_child)
        )
    return result


def _repository_usage(name, numbers, manifests, sizes, refcount, marked):
    referenced = unique = reclaimable = 0
    for number in numbers:
        size = sizes[number]
        referenced += size
        if refcount[number] == 1:
            unique += size
        if not marked[number]:
            reclaimable += size
    return RepositoryUsage(
        name=name,
        referenced_bytes=referenced,
        unique_bytes=unique,
        shared_bytes=referenced - unique,
        reclaimable_bytes=reclaimable,
        blob_count=len(numbers),
        manifest_count=manifests,
    )


def scan_storage(backend=None, progress=None, cache=None):
    """Scan the configured storage (or `backend`). Returns (backend, ScanResult); raises
    StorageError."""
    backend = backend or get_backend()
    result = scan(
        backend.list_entries(V2_PREFIX),
        backend.read,
        progress=progress,
        cache=cache,
        read_concurrency=settings.STORAGE_READ_CONCURRENCY,
    )
    return backend, result
