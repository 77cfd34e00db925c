"""What breaks when this registry moves from distribution 2.8 to 3.x (`check_registry_upgrade`).

Reads the registry's configuration as the portal knows it (a config file, the registry's
REGISTRY_STORAGE_* / REGISTRY_AUTH_* variables, or else the configuration Oyster generates from
its settings) and, for Azure, the storage through storage.py. Each finding names the 3.x
behaviour it comes from; the sources are cited in registry_admin/tests/distribution3/README.md.
"""

import base64
import hashlib
import json
import os
from dataclasses import dataclass

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.conf import settings

from . import registry_config, storage

BREAKS, CHECK, OK = "breaks", "check", "ok"
CONFIG_MAX_BYTES = 1024 * 1024
# Prefixes of the registry's environment overrides the upgrade depends on. Not REGISTRY_ alone:
# the portal's own REGISTRY_URL, REGISTRY_USERNAME, ... share that prefix.
ENV_PREFIXES = ("REGISTRY_STORAGE", "REGISTRY_AUTH")
# The repository files 2.8's PutContent wrote as block blobs and pushes rewrite (link files).
_REPOSITORIES = storage.V2_PREFIX + "repositories/"


class UpgradeCheckError(Exception):
    """The configuration cannot be read; str(error) is a sentence."""


@dataclass(frozen=True)
class Finding:
    level: str
    topic: str
    message: str


def load_config(path):
    """The registry config at `path` as a dict; raises UpgradeCheckError with a sentence."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(CONFIG_MAX_BYTES + 1)
    except OSError as exc:
        raise UpgradeCheckError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    if len(raw) > CONFIG_MAX_BYTES:
        raise UpgradeCheckError(f"{path} is larger than 1 MiB: not a registry configuration.")
    try:
        config = yaml.safe_load(raw)
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise UpgradeCheckError(f"{path} is not valid YAML{line}.") from None
    if not isinstance(config, dict):
        raise UpgradeCheckError(f"{path} is not a registry configuration (no mapping at the top).")
    return config


def generated_config():
    """The 2.8 configuration Oyster would print for the registry (`registry_config`)."""
    config = {}
    if storage.backend_kind() == "azure":
        config["storage"] = registry_config.azure_storage_section(
            2,
            settings.AZURE_STORAGE_ACCOUNT_NAME,
            settings.AZURE_STORAGE_CONTAINER,
            root_directory=settings.AZURE_STORAGE_ROOT_DIRECTORY,
        )
    return config


def apply_environment(config, environ):
    """Overlay REGISTRY_STORAGE* / REGISTRY_AUTH* the way the registry does (configuration/
    parser.go: one nesting level per `_`, map keys lowercased; `REGISTRY_STORAGE=azure` names
    the driver and replaces the section)."""
    for name in sorted(environ):  # REGISTRY_STORAGE sorts before REGISTRY_STORAGE_AZURE_...
        if len(name) > 200 or not any(
            name == prefix or name.startswith(prefix + "_") for prefix in ENV_PREFIXES
        ):
            continue
        path = name.removeprefix("REGISTRY_").lower().split("_")
        value = environ[name]
        if len(path) == 1:
            config[path[0]] = {value.strip().lower(): {}}
            continue
        node = config
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
    return config


def _section(config, *keys):
    node = config
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def check_config(config, config_path=None):
    findings = []
    # The config path.
    new_path = registry_config.CONFIG_PATHS[3]
    if config_path and os.path.abspath(config_path) == new_path:
        findings.append(Finding(OK, "config path", f"{config_path} is where registry:3 reads."))
    else:
        where = f"This configuration ({config_path})" if config_path else "A mounted config.yml"
        findings.append(
            Finding(
                CHECK,
                "config path",
                f"{where} must be at {new_path} for registry:3 (2.8 read "
                f"{registry_config.CONFIG_PATHS[2]}), or start it with `registry serve PATH`; "
                "REGISTRY_* variables work the same.",
            )
        )
    # The Azure driver's credentials.
    azure = _section(config, "storage", "azure")
    if azure is not None:
        credentials = azure.get("credentials")
        kind = credentials.get("type") if isinstance(credentials, dict) else None
        kind = str(kind or "")
        if kind in registry_config.AZURE_CREDENTIALS_TYPES:
            findings.append(Finding(OK, "azure credentials", f"credentials.type is {kind}."))
        else:
            shown = f"{kind[:40]!r} is not accepted" if kind else "is missing"
            findings.append(
                Finding(
                    BREAKS,
                    "azure credentials",
                    f"storage.azure.credentials.type {shown}: registry:3 stops at start with "
                    f'`invalid credentials type: "{kind[:40]}"`. Set '
                    "REGISTRY_STORAGE_AZURE_CREDENTIALS_TYPE=default_credentials (the registry "
                    "app's managed identity, role Storage Blob Data Contributor on the account) or "
                    "shared_key (keeps REGISTRY_STORAGE_AZURE_ACCOUNTKEY); "
                    "`manage.py registry_config --registry-version 3` prints either.",
                )
            )
    # Token auth.
    token = _section(config, "auth", "token")
    if token is not None:
        findings.append(_token_finding(token))
    # Deletes by tag before 3.1.1.
    delete = _section(config, "storage", "delete")
    enabled = str((delete or {}).get("enabled", "false")).lower() in ("true", "1", "yes", "on")
    if not enabled:
        findings.append(
            Finding(
                CHECK,
                "deletes",
                "storage.delete.enabled is off, but registry 3.0.x untags on "
                "`DELETE /v2/<name>/manifests/<tag>` anyway (fixed in 3.1.1): use 3.1.1 or later.",
            )
        )
    findings.append(
        Finding(
            OK,
            "garbage collection",
            "`garbage-collect --delete-untagged` keeps the children of tagged indexes on every 3.x "
            "release; it stays unsafe on 2.8.",
        )
    )
    findings.append(
        Finding(
            OK,
            "notifications",
            "3.x sends application/vnd.docker.distribution.events.v2+json envelopes with "
            '`"digest": ""` on tag deletes; Oyster reads both versions.',
        )
    )
    return findings


def _token_finding(token):
    if token.get("jwks"):
        return Finding(
            CHECK,
            "token kid",
            f"auth.token.jwks is {str(token['jwks'])[:200]}: every token's header must carry the "
            "`kid` of one of its keys, or an `x5c` chain to rootcertbundle.",
        )
    bundle = str(token.get("rootcertbundle") or "")
    thumbprints = []
    try:
        with open(bundle, "rb") as handle:
            certificates = x509.load_pem_x509_certificates(handle.read(CONFIG_MAX_BYTES))
        thumbprints = [t for t in map(jwk_thumbprint, (c.public_key() for c in certificates)) if t]
    except (OSError, ValueError):
        pass
    known = (
        " Accepted kid values (RFC 7638 thumbprints of rootcertbundle): "
        + ", ".join(thumbprints)
        + "."
        if thumbprints
        else f" (rootcertbundle {bundle[:200] or 'unset'} could not be read here.)"
    )
    return Finding(
        CHECK,
        "token kid",
        "registry:3 accepts a token only with an `x5c` chain to rootcertbundle, or a `kid` equal "
        "to the RFC 7638 thumbprint of a rootcertbundle key (or in a jwks file); 2.8's libtrust "
        "key ids are refused with `token signed by untrusted key with ID`." + known,
    )


def _b64(number, length):
    return base64.urlsafe_b64encode(number.to_bytes(length, "big")).rstrip(b"=").decode()


def jwk_thumbprint(key):
    """RFC 7638 thumbprint of an EC or RSA public key (what distribution 3 calls the kid)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        size = (key.curve.key_size + 7) // 8
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(key.curve.name)
        if crv is None:
            return None
        numbers = key.public_numbers()
        members = {"crv": crv, "kty": "EC", "x": _b64(numbers.x, size), "y": _b64(numbers.y, size)}
    elif isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        members = {
            "e": _b64(numbers.e, (numbers.e.bit_length() + 7) // 8),
            "kty": "RSA",
            "n": _b64(numbers.n, (numbers.n.bit_length() + 7) // 8),
        }
    else:
        return None
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def block_blob_links(backend, progress_every=0):
    """(link files that are block blobs, link files, {repository: block blob links}) under the
    registry's repositories/ tree; raises StorageError."""
    blocks = total = 0
    per_repository = {}
    for path, blob_type in backend.list_blob_types(_REPOSITORIES):
        if not path.endswith("/link"):
            continue
        total += 1
        if blob_type == "BlockBlob":
            blocks += 1
            rest = path[len(_REPOSITORIES) :]
            name = rest[: rest.find("/_")] if "/_" in rest else rest
            per_repository[name] = per_repository.get(name, 0) + 1
    return blocks, total, per_repository


def check_storage(backend=None):
    """The Azure block blob hazard, counted from a listing of the registry's storage."""
    kind = storage.backend_kind()
    if backend is None and kind != "azure":
        return [
            Finding(OK, "azure blob types", f"Storage is {kind or 'unset'}: no Azure blob types.")
        ]
    try:
        backend = backend or storage.get_backend()
        blocks, total, per_repository = block_blob_links(backend)
    except storage.StorageError as exc:
        return [Finding(CHECK, "azure blob types", f"Could not list the storage: {exc}")]
    if not blocks:
        return [
            Finding(
                OK,
                "azure blob types",
                f"None of the {total:,} link files is a block blob: nothing for 3.x to trip on.",
            )
        ]
    largest = sorted(per_repository.items(), key=lambda item: (-item[1], item[0]))[:5]
    return [
        Finding(
            BREAKS,
            "azure blob types",
            f"{blocks:,} of {total:,} link files in {len(per_repository):,} repositories are block "
            "blobs (written by 2.8). Every released 3.x (3.0.0 to 3.1.1) fails to overwrite them "
            "with 409 InvalidBlobType, so pushes that re-tag or re-link them fail (most: "
            + ", ".join(f"{name} {count:,}" for name, count in largest)
            + "). The fix (distribution PR #4871) is in no release yet: stay on 2.8, or move the "
            "images to a new container for 3.x; see docs/azure-app-service.md.",
        )
    ]


def run_checks(config_path=None, environ=None, include_storage=True, backend=None):
    """All findings, in order: configuration first, then the storage."""
    config = load_config(config_path) if config_path else generated_config()
    config = apply_environment(config, os.environ if environ is None else environ)
    findings = check_config(config, config_path)
    if include_storage:
        findings += check_storage(backend)
    return findings
