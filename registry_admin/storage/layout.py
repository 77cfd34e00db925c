"""Where the registry keeps things in its storage, shared by the backends and the scan.

See https://github.com/distribution/distribution/blob/release/2.8/registry/storage/paths.go
"""

import re

V2_PREFIX = "docker/registry/v2/"
BLOBS = V2_PREFIX + "blobs/sha256/"
REPOSITORIES = V2_PREFIX + "repositories/"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def digest_bytes(digest):
    """32 raw bytes of a `sha256:<hex>` digest, or None for other algorithms or junk."""
    if not digest.startswith("sha256:") or not _HEX64.fullmatch(digest, 7):
        return None
    return bytes.fromhex(digest[7:])


def blob_path(raw_digest):
    hex_digest = raw_digest.hex()
    return f"{BLOBS}{hex_digest[:2]}/{hex_digest}/data"
