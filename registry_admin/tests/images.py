"""Small real images, built in memory and pushed through the registry HTTP API v2.

Each image has a real gzip'd tar layer and a real config (created date, platform, history,
labels), so the registry, skopeo and the portal all see genuine content.
"""

import gzip
import hashlib
import io
import json
import os
import tarfile
import time
from dataclasses import dataclass, field

import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

ALL_MANIFEST_TYPES = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layer(files):
    """A gzip'd tar of {path: bytes}; deterministic for the same files."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


@dataclass
class Image:
    """One single-platform image: config + layers + manifest, all as bytes."""

    config: bytes
    layers: list
    manifest: bytes
    media_type: str

    @property
    def digest(self):
        return sha256_digest(self.manifest)

    @property
    def config_digest(self):
        return sha256_digest(self.config)

    @property
    def blobs(self):
        return [self.config, *self.layers]

    @property
    def size(self):
        """Compressed size as the portal reports it: config + layers."""
        return len(self.config) + sum(len(layer) for layer in self.layers)


@dataclass
class ImageIndex:
    """A multi-platform index (OCI) or manifest list (Docker) with its child images."""

    children: list
    platforms: list
    manifest: bytes
    media_type: str = OCI_INDEX
    annotations: dict = field(default_factory=dict)

    @property
    def digest(self):
        return sha256_digest(self.manifest)


def build_image(
    layers=None,
    docker=False,
    created="2024-01-02T03:04:05Z",
    os_name="linux",
    architecture="amd64",
    variant=None,
    labels=None,
    cmd=None,
    seed=None,
):
    """An image whose layers are `layers` (list of bytes) or one random layer."""
    if layers is None:
        layers = [make_layer({"hello.txt": (seed or os.urandom(16).hex()).encode()})]
    diff_ids = [sha256_digest(gzip.decompress(layer)) for layer in layers]
    config = {
        "created": created,
        "author": "oyster tests",
        "architecture": architecture,
        "os": os_name,
        "config": {
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "Cmd": cmd or ["/bin/sh"],
            "WorkingDir": "/srv",
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": labels or {"org.opencontainers.image.title": "test"},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": created, "created_by": f"/bin/sh -c #(nop) ADD layer{i}"}
            for i in range(len(layers))
        ],
    }
    if variant:
        config["variant"] = variant
    config_bytes = json.dumps(config, sort_keys=True).encode()
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
            "digest": sha256_digest(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": DOCKER_LAYER if docker else OCI_LAYER,
                "digest": sha256_digest(layer),
                "size": len(layer),
            }
            for layer in layers
        ],
    }
    return Image(
        config=config_bytes,
        layers=list(layers),
        manifest=json.dumps(manifest, indent=2).encode(),
        media_type=media_type,
    )


def build_index(platforms=(("linux", "amd64", None), ("linux", "arm64", "v8")), docker=False):
    """An OCI index (or Docker manifest list with docker=True) over one image per platform."""
    children, entries = [], []
    for os_name, arch, variant in platforms:
        child = build_image(docker=docker, os_name=os_name, architecture=arch, variant=variant)
        children.append(child)
        platform = {"os": os_name, "architecture": arch}
        if variant:
            platform["variant"] = variant
        entries.append(
            {
                "mediaType": child.media_type,
                "digest": child.digest,
                "size": len(child.manifest),
                "platform": platform,
            }
        )
    media_type = DOCKER_LIST if docker else OCI_INDEX
    index = {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}
    return ImageIndex(
        children=children,
        platforms=list(platforms),
        manifest=json.dumps(index, indent=2).encode(),
        media_type=media_type,
    )


class RegistryPusher:
    """Pushes blobs and manifests with plain HTTP, as a client like docker would."""

    def __init__(self, base_url, username, password, timeout=10):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.auth = (username, password)
        self.timeout = timeout

    def push_blob(self, repo, data):
        digest = sha256_digest(data)
        head = self.session.head(f"{self.base_url}/v2/{repo}/blobs/{digest}", timeout=self.timeout)
        if head.status_code == 200:
            return digest
        start = self.session.post(f"{self.base_url}/v2/{repo}/blobs/uploads/", timeout=self.timeout)
        start.raise_for_status()
        location = start.headers["Location"]
        if location.startswith("/"):
            location = self.base_url + location
        sep = "&" if "?" in location else "?"
        put = self.session.put(
            f"{location}{sep}digest={digest}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=self.timeout,
        )
        put.raise_for_status()
        return digest

    def put_manifest(self, repo, reference, manifest, media_type):
        response = self.session.put(
            f"{self.base_url}/v2/{repo}/manifests/{reference}",
            data=manifest,
            headers={"Content-Type": media_type},
            timeout=self.timeout,
        )
        if response.status_code >= 300:
            raise AssertionError(
                f"manifest PUT {repo}:{reference}: {response.status_code} {response.text}"
            )
        return response.headers.get("Docker-Content-Digest")

    def push_image(self, repo, tag, image):
        """Push an Image (or an ImageIndex with its children); returns the manifest digest."""
        if isinstance(image, ImageIndex):
            for child in image.children:
                self.push_image(repo, child.digest, child)
            return self.put_manifest(repo, tag, image.manifest, image.media_type)
        for blob in image.blobs:
            self.push_blob(repo, blob)
        return self.put_manifest(repo, tag, image.manifest, image.media_type)

    def tags(self, repo):
        response = self.session.get(f"{self.base_url}/v2/{repo}/tags/list", timeout=self.timeout)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return sorted(response.json().get("tags") or [])

    def head_manifest(self, repo, reference):
        """The registry's digest for repo:reference, or None when it is gone."""
        response = self.session.head(
            f"{self.base_url}/v2/{repo}/manifests/{reference}",
            headers={"Accept": ALL_MANIFEST_TYPES},
            timeout=self.timeout,
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.headers["Docker-Content-Digest"]


def write_oci_layout(directory, image, tag):
    """Lay an Image out as an OCI image layout (for `skopeo copy oci:DIR:TAG ...`)."""
    blobs = os.path.join(directory, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    for data in [*image.blobs, image.manifest]:
        with open(os.path.join(blobs, sha256_digest(data).split(":", 1)[1]), "wb") as f:
            f.write(data)
    with open(os.path.join(directory, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": image.media_type,
                "digest": image.digest,
                "size": len(image.manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    with open(os.path.join(directory, "index.json"), "w") as f:
        json.dump(index, f)


def wait_for(predicate, timeout=10.0, interval=0.05, message="condition"):
    """Poll `predicate` until it returns something truthy; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
