"""Helpers for the storage tests: registry storage trees on disk and in Azurite.

`StorageTree` writes the registry's own layout (docker/registry/v2/...) by hand for cases a
real push cannot produce (schema1, junk, hostile names); the acceptance tests use trees the real
registry wrote. Azurite is driven with the real azure-storage-blob SDK.
"""

import hashlib
import json
import os
import uuid
from pathlib import Path

from azure.storage.blob import ContainerClient

V2 = "docker/registry/v2"


def hex_of(data):
    return hashlib.sha256(data).hexdigest()


class StorageTree:
    """A registry storage root in `root`, written file by file like the filesystem driver does."""

    def __init__(self, root):
        self.root = Path(root)

    def write(self, relative, data):
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def blob(self, data):
        digest = hex_of(data)
        self.write(f"{V2}/blobs/sha256/{digest[:2]}/{digest}/data", data)
        return digest

    def link_layer(self, repository, digest):
        self.write(
            f"{V2}/repositories/{repository}/_layers/sha256/{digest}/link",
            f"sha256:{digest}".encode(),
        )

    def link_revision(self, repository, digest, tag=None):
        self.write(
            f"{V2}/repositories/{repository}/_manifests/revisions/sha256/{digest}/link",
            f"sha256:{digest}".encode(),
        )
        if tag:
            base = f"{V2}/repositories/{repository}/_manifests/tags/{tag}"
            self.write(f"{base}/current/link", f"sha256:{digest}".encode())
            self.write(f"{base}/index/sha256/{digest}/link", f"sha256:{digest}".encode())

    def unlink_revision(self, repository, digest):
        (
            self.root / f"{V2}/repositories/{repository}/_manifests/revisions/sha256/{digest}/link"
        ).unlink()

    def image(self, repository, layers, tag=None, config=None):
        """Push-like: blobs and layer links for config + layers, then the manifest revision.

        Returns (manifest digest, manifest bytes, config bytes)."""
        config = config or json.dumps({"architecture": "amd64", "n": uuid.uuid4().hex}).encode()
        for data in [config, *layers]:
            self.link_layer(repository, self.blob(data))
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"digest": "sha256:" + hex_of(config), "size": len(config)},
                "layers": [{"digest": "sha256:" + hex_of(x), "size": len(x)} for x in layers],
            }
        ).encode()
        digest = self.blob(manifest)
        self.link_revision(repository, digest, tag)
        return digest, manifest, config

    def upload(self, repository, data, upload_id=None):
        upload_id = upload_id or str(uuid.uuid4())
        base = f"{V2}/repositories/{repository}/_uploads/{upload_id}"
        self.write(f"{base}/data", data)
        self.write(f"{base}/startedat", b"2026-01-01T00:00:00Z")
        return upload_id


def files_under(root, *parts):
    """{relative path: size} of every file under root/parts (symlinks not followed)."""
    base = Path(root, *parts)
    found = {}
    for directory, _, names in os.walk(base):
        for name in names:
            path = Path(directory, name)
            found[str(path.relative_to(root))] = path.stat().st_size
    return found


def blob_data_sizes(root):
    """Sizes of blobs/**/data, straight from the filesystem (the test's own count)."""
    return {
        path: size
        for path, size in files_under(root, V2, "blobs").items()
        if path.endswith("/data")
    }


def azurite_container(azurite, name=None):
    """A fresh container in `azurite` (real SDK), returned with its name."""
    name = name or f"reg{uuid.uuid4().hex[:20]}"
    client = ContainerClient.from_connection_string(
        azurite.connection_string, name, connection_timeout=10, read_timeout=30
    )
    client.create_container()
    return client


def upload_tree(container, root, prefix=""):
    """Copy every file under `root` into `container` as `prefix + relative path`."""
    count = 0
    for path in sorted(files_under(root)):
        with open(Path(root, path), "rb") as handle:
            container.upload_blob(prefix + path, handle, overwrite=True)
        count += 1
    return count


def azure_settings(settings, azurite, container_name, root_directory="", **overrides):
    """Point the portal at `container_name` in `azurite` with account name + key + URL."""
    settings.STORAGE_BACKEND = "azure"
    settings.AZURE_STORAGE_CREDENTIAL = ""
    settings.AZURE_STORAGE_SAS_TOKEN = ""
    settings.AZURE_STORAGE_CONNECTION_STRING = ""
    settings.AZURE_STORAGE_ACCOUNT_NAME = azurite.account_name
    settings.AZURE_STORAGE_ACCOUNT_KEY = azurite.account_key
    settings.AZURE_STORAGE_ACCOUNT_URL = azurite.account_url
    settings.AZURE_STORAGE_CONTAINER = container_name
    settings.AZURE_STORAGE_ROOT_DIRECTORY = root_directory
    settings.STORAGE_TIMEOUT = 5
    for name, value in overrides.items():
        setattr(settings, name, value)


class DictCache:
    """The scan's manifest-reference cache interface, in memory, counting its lookups."""

    def __init__(self):
        self.known = {}
        self.looked_up = 0

    def lookup(self, digests):
        self.looked_up += len(digests)
        return {d: self.known[d] for d in digests if d in self.known}

    def store(self, fresh):
        self.known.update(fresh)

    def prune(self, live):
        self.known = {d: refs for d, refs in self.known.items() if d in live}
