"""How the portal reaches the registry's storage, and the settings that pick and configure it.

Two backends share one narrow interface: `list_entries(prefix)` yields `(path, size,
last_modified)` for every object under `prefix` (paths relative to the registry's root
directory, last_modified as a POSIX timestamp), `scan_entries()` the listing the usage scan
takes (the same, or names only where the scan can do without: see `scan`), `read(path,
max_bytes)` returns a small object's bytes (None when it is absent) and `blob_size(digest)` a
stored blob's size.
`get_backend()` builds the one `STORAGE_BACKEND` names with a plain if/elif: two kinds exist,
a dotted-path choice would wait for a third.

The only module that imports azure.*. Raises `StorageError`, whose message is a sentence for
the page.
"""

import functools
import logging
import os
import urllib.request
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


_FS_WRITE_DENIED = (
    "Permission denied writing to the registry's storage: the worker needs write access to it "
    "for the online collector (mount it read-write for the worker only)."
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
        raw = digest_bytes(digest)
        if raw is None:
            return None
        try:
            return os.stat(os.path.join(self.root, blob_path(raw))).st_size
        except OSError:
            return None

    # --- Writes (the online collector) ---

    def _full(self, path):
        full = os.path.normpath(os.path.join(self.root, path))
        if not path or os.path.isabs(path) or not full.startswith(self.root + os.sep):
            raise StorageError(f"Refused a path outside the storage root: {path[:200]!r}.")
        return full

    def delete_objects(self, paths, progress=None):
        deleted = 0
        for path in paths:
            try:
                os.remove(self._full(path))
                deleted += 1
            except FileNotFoundError:
                continue
            except PermissionError as exc:
                raise StorageError(_FS_WRITE_DENIED) from exc
        return deleted

    def move_objects(self, moves, progress=None):
        moved = 0
        for source, target in moves:
            source, target = self._full(source), self._full(target)
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.rename(source, target)
                moved += 1
            except FileNotFoundError:
                continue
            except PermissionError as exc:
                raise StorageError(_FS_WRITE_DENIED) from exc
        return moved

    def write_object(self, path, data):
        full = self._full(path)
        try:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            temporary = f"{full}.oyster-{os.getpid()}"
            with open(temporary, "wb") as handle:
                handle.write(data)
            os.replace(temporary, full)
        except PermissionError as exc:
            raise StorageError(_FS_WRITE_DENIED) from exc

    def object_exists(self, path):
        return os.path.isfile(self._full(path))

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
            raise StorageError(_NO_CONTAINER)
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

    def list_entries(self, prefix):
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
        for path, blob in self._listing(self.client.list_blobs, prefix):
            yield path, str(getattr(blob.blob_type, "value", blob.blob_type))


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
        )
    raise StorageError(settings_problems()[0][1])
