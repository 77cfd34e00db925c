"""The registry's blob storage, read for usage figures.

`backends` reaches the storage (filesystem or Azure Blob, picked by STORAGE_BACKEND) and
validates its settings; `scan` turns one listing into usage figures; `layout` names the paths
both share. Callers use the names below; `scan_storage()` joins the two.
"""

from django.conf import settings

from .backends import (
    AZURE_PAGE_SIZE,
    AzureStorage,
    FilesystemStorage,
    StorageError,
    azure_credential_problem,
    backend_kind,
    configuration_problem,
    get_backend,
    settings_problems,
)
from .layout import V2_PREFIX, digest_bytes
from .scan import (
    MANIFEST_MAX_BYTES,
    RepositoryUsage,
    ScanResult,
    UntaggedRevision,
    manifest_references,
    packed_references,
    scan,
)

__all__ = [
    "AZURE_PAGE_SIZE",
    "MANIFEST_MAX_BYTES",
    "V2_PREFIX",
    "AzureStorage",
    "FilesystemStorage",
    "RepositoryUsage",
    "ScanResult",
    "StorageError",
    "UntaggedRevision",
    "azure_credential_problem",
    "backend_kind",
    "configuration_problem",
    "digest_bytes",
    "get_backend",
    "manifest_references",
    "packed_references",
    "scan",
    "scan_storage",
    "settings_problems",
]


def scan_storage(backend=None, progress=None, cache=None, held=None, groups=None):
    """Scan the configured storage (or `backend`). Returns (backend, ScanResult); raises
    StorageError."""
    backend = backend or get_backend()
    result = scan(
        backend.scan_entries(),
        backend.read,
        progress=progress,
        cache=cache,
        read_concurrency=settings.STORAGE_READ_CONCURRENCY,
        details=backend.list_entries,
        held=held,
        groups=groups,
    )
    return backend, result
