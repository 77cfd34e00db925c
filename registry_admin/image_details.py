"""What a manifest says about its image: platforms, sizes, layers, labels, config summary.

`read_live_image(name, reference)` is what the tag and digest pages show, read from the registry
now. `fetch_details()` and `details_from_document()` turn a manifest (and its config blob, and
for an index each child) into the fields of the index's `Manifest` row; the reconcile and the
details job in `reconcile` store them.
"""

import json
from dataclasses import dataclass
from datetime import UTC

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import references, referrers, registry, usage

IMAGE_CONFIG_TYPES = frozenset(
    {
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.container.image.v1+json",
    }
)
# Index entries that are not runnable images (BuildKit attestations, signatures).
_ATTESTATION_ANNOTATION = "vnd.docker.reference.type"
_HISTORY_LIMIT = 500
_TEXT_LIMIT = 4000


def fetch_details(client, repository, digest, configs=None):
    """The Manifest fields for `digest`, read from `repository`. Raises RegistryError.

    `configs` ({digest: config}) spares reading a config blob twice: images rebuilt without
    changes, or re-annotated, share one.
    """
    document = client.get_manifest(repository, digest)
    read = [document]
    fields = details_from_document(client, repository, document, configs, read=read)
    # The storage scan needs what each manifest references: these bytes are the stored ones.
    for manifest in read:
        usage.remember_manifest(manifest.digest, manifest.raw)
    return fields


def details_from_document(client, repository, document, configs=None, read=None):
    """The Manifest fields for a fetched ManifestDocument (reads its config or children; each
    child manifest read is appended to `read` when given)."""
    configs = {} if configs is None else configs
    fields = {
        "media_type": document.media_type,
        "manifest_size": len(document.raw),
        "is_index": document.is_index,
        "details_error": "",
        "details_fetched_at": timezone.now(),
        # Signatures, SBOMs, attestations: what they refer to and what they are.
        **referrers.manifest_fields(document.data),
    }
    if document.is_index:
        fields.update(_index_details(client, repository, document.data, configs, read))
    elif "fsLayers" in document.data:
        fields.update(_schema1_details(document.data))
    else:
        fields.update(_image_details(client, repository, document.data, configs))
    return fields


def _image_details(client, repository, manifest, configs):
    config_ref = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    layers = [
        {
            "digest": str(layer.get("digest", "")),
            "size": _int(layer.get("size")),
            "media_type": str(layer.get("mediaType", "")),
        }
        for layer in _list(manifest.get("layers"))
        if isinstance(layer, dict)
    ]
    config_digest = str(config_ref.get("digest", ""))
    size = _int(config_ref.get("size")) + sum(layer["size"] for layer in layers)
    config = {}
    config_type = str(config_ref.get("mediaType", ""))
    if config_type in IMAGE_CONFIG_TYPES and references.is_valid_digest(config_digest):
        if config_digest not in configs:
            configs[config_digest] = client.get_config(repository, config_digest)
        config = configs[config_digest]
    summary = summarize_config(config)
    platform = {key: summary[key] for key in ("os", "architecture", "variant") if summary.get(key)}
    return {
        "size": size,
        "created": _datetime(config.get("created")),
        "config_digest": config_digest,
        "platforms": [platform] if platform else [],
        "layer_count": len(layers),
        "layers": layers,
        "labels": summary.pop("labels"),
        "config": {**summary, "config_media_type": config_type},
    }


def _index_details(client, repository, index, configs, read=None):
    platforms, sizes, created = [], [], []
    for entry in _list(index.get("manifests")):
        if not isinstance(entry, dict):
            continue
        platform = entry.get("platform") if isinstance(entry.get("platform"), dict) else {}
        annotations = entry.get("annotations") if isinstance(entry.get("annotations"), dict) else {}
        child = {
            "digest": str(entry.get("digest", "")),
            "media_type": str(entry.get("mediaType", "")),
            "os": str(platform.get("os", "")),
            "architecture": str(platform.get("architecture", "")),
            "variant": str(platform.get("variant", "")),
            "attestation": _ATTESTATION_ANNOTATION in annotations,
        }
        if entry.get("artifactType"):
            # A referrers tag schema's index lists artifacts: what each is, for the tag page.
            child["artifact_type"] = str(entry["artifactType"])[:255]
            child["kind"] = referrers.kind_of(child["artifact_type"])
            child["annotations"] = {
                str(k)[:200]: str(v)[:_TEXT_LIMIT] for k, v in list(annotations.items())[:40]
            }
        try:
            child_document = client.get_manifest(repository, child["digest"])
            if read is not None:
                read.append(child_document)
            details = _image_details(client, repository, child_document.data, configs)
        except registry.RegistryNotFound:
            child["missing"] = True
        else:
            child.update(
                size=details["size"],
                created=details["created"].isoformat() if details["created"] else None,
                layer_count=details["layer_count"],
                # What the child's blobs are, for the unused report's "deleting this tag
                # alone would free" (the child has no tag, so no row of its own).
                manifest_size=len(child_document.raw),
                config_digest=details["config_digest"],
                layers=details["layers"],
            )
            if not child["attestation"]:
                sizes.append(details["size"])
                if details["created"]:
                    created.append(details["created"])
        platforms.append(child)
    return {
        "size": sum(sizes) if sizes else None,
        "created": max(created) if created else None,
        "platforms": platforms,
        "layer_count": None,
        "layers": [],
        "labels": {},
        "config": {},
    }


def _schema1_details(manifest):
    """Legacy schema1 manifests: no sizes, the config is the first history entry."""
    try:
        v1 = json.loads((_list(manifest.get("history")) or [{}])[0].get("v1Compatibility") or "{}")
    except (ValueError, AttributeError, IndexError, TypeError, RecursionError):
        v1 = {}
    summary = summarize_config(v1 if isinstance(v1, dict) else {})
    layers = [
        {"digest": str(layer.get("blobSum", "")), "size": None, "media_type": ""}
        for layer in _list(manifest.get("fsLayers"))
        if isinstance(layer, dict)
    ]
    return {
        "size": None,
        "created": _datetime(v1.get("created") if isinstance(v1, dict) else None),
        "platforms": [
            {"os": summary.get("os", ""), "architecture": summary.get("architecture", "")}
        ],
        "layer_count": len(layers),
        "layers": layers,
        "labels": summary.pop("labels"),
        "config": summary,
    }


def summarize_config(config):
    """The parts of an image config the pages show, bounded in size."""
    if not isinstance(config, dict):
        config = {}
    runtime = config.get("config") if isinstance(config.get("config"), dict) else {}
    labels = runtime.get("Labels") if isinstance(runtime.get("Labels"), dict) else {}
    history = []
    for step in _list(config.get("history"))[:_HISTORY_LIMIT]:
        if isinstance(step, dict):
            history.append(
                {
                    "created": _clip(step.get("created")),
                    "created_by": _clip(step.get("created_by")),
                    "comment": _clip(step.get("comment")),
                    "empty_layer": bool(step.get("empty_layer")),
                }
            )
    return {
        "created": _clip(config.get("created")),
        "author": _clip(config.get("author")),
        "os": _clip(config.get("os")),
        "architecture": _clip(config.get("architecture")),
        "variant": _clip(config.get("variant")),
        "user": _clip(runtime.get("User")),
        "env": [_clip(item) for item in _list(runtime.get("Env"))],
        "entrypoint": [_clip(item) for item in _list(runtime.get("Entrypoint"))],
        "cmd": [_clip(item) for item in _list(runtime.get("Cmd"))],
        "working_dir": _clip(runtime.get("WorkingDir")),
        "exposed_ports": sorted(_clip(port) for port in (runtime.get("ExposedPorts") or {}))
        if isinstance(runtime.get("ExposedPorts"), dict)
        else [],
        "volumes": sorted(_clip(v) for v in (runtime.get("Volumes") or {}))
        if isinstance(runtime.get("Volumes"), dict)
        else [],
        "stop_signal": _clip(runtime.get("StopSignal")),
        "labels": {_clip(k): _clip(v) for k, v in list(labels.items())[:500]},
        "history": history,
    }


def _list(value):
    if isinstance(value, list):
        return value[:500]
    if isinstance(value, str):
        return [value]
    return []


def _clip(value):
    if value is None:
        return ""
    return str(value)[:_TEXT_LIMIT]


def _int(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _datetime(value):
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    if parsed is None or parsed.year < 1971:
        return None
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class LiveImage:
    """An image as the registry serves it now: `details` (Manifest fields), `digest`, `raw`."""

    details: dict
    digest: str
    raw: bytes


def read_live_image(name, reference):
    """The image `name:tag` or `name@digest` from the registry. Raises RegistryNotFound when the
    registry does not have it, RegistryError for any other failure."""
    client = registry.get_client()
    document = client.get_manifest(name, reference)
    return LiveImage(
        details=details_from_document(client, name, document),
        digest=document.digest,
        raw=document.raw,
    )
