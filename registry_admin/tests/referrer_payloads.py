"""Referrer manifests in the formats their specifications define, and builders of real ones to
push to the test registry.

Sources (each fixture says which it follows):
- cosign: sigstore/cosign specs/SIGNATURE_SPEC.md ("Tag-based Discovery", "OCI Image Manifest
  V1": simplesigning payload layer, `dev.cosignproject.cosign/signature` and
  `dev.sigstore.cosign/certificate` annotations on the layer) and specs/ATTESTATION_SPEC.md
  (DSSE envelope layer `application/vnd.dsse.envelope.v1+json`, `predicateType` annotation).
- OCI image-spec 1.1 manifest.md: "Example Image Manifest" (the `subject` descriptor) and
  "Guidelines for Artifact Usage" (artifactType with the empty config
  `application/vnd.oci.empty.v1+json`, digest of `{}`).
- OCI distribution-spec 1.1 spec.md: "Listing Referrers" (the index of descriptors with
  artifactType and annotations) and "Referrers Tag Schema" (`sha256-<hex>` tag).
"""

import base64
import json
from dataclasses import dataclass

from .images import OCI_INDEX, OCI_MANIFEST, sha256_digest

EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE = "application/vnd.dsse.envelope.v1+json"
SPDX = "application/spdx+json"
CYCLONEDX = "application/vnd.cyclonedx+json"
IN_TOTO = "application/vnd.in-toto+json"

# The certificate of cosign's SIGNATURE_SPEC.md "certificate" example (first lines kept: the
# portal shows it as text and never verifies it).
SPEC_CERTIFICATE = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIICrjCCAjSgAwIBAgIUAM4mURWUSkg06fmHmFfTmerYKaUwCgYIKoZIzj0EAwMw\n"
    "KjEVMBMGA1UEChMMc2lnc3RvcmUuZGV2MREwDwYDVQQDEwhzaWdzdG9yZTAeFw0y\n"
    "-----END CERTIFICATE-----\n"
)
# cosign SIGNATURE_SPEC.md, "Signature" example value.
SPEC_SIGNATURE = "MEUCIBKI9FIC+YD3m/lWViyPxsJsbnIHj86sSbb7L3qvpEFoAiEA2ZChO/67CuAPQKJLBVsAc7bs9hBK8RpsdfjBsByGKJM="
SPEC_SUBJECT = "sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270"

# cosign SIGNATURE_SPEC.md "Payload and mediaType" (config and layer), with the layer's
# "Signature" and "Certificate" annotations as the spec places them.
COSIGN_SIGNATURE_MANIFEST = {
    "schemaVersion": 2,
    "mediaType": OCI_MANIFEST,
    "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "size": 233,
        "digest": "sha256:" + "3" * 64,
    },
    "layers": [
        {
            "mediaType": SIMPLESIGNING,
            "size": 210,
            "digest": "sha256:1119abab63e605dcc281019bad0424744178b6f61ba57378701fe7391994c999",
            "annotations": {
                "dev.cosignproject.cosign/signature": SPEC_SIGNATURE,
                "dev.sigstore.cosign/certificate": SPEC_CERTIFICATE,
            },
        }
    ],
}

# cosign ATTESTATION_SPEC.md: a DSSE envelope layer with its predicateType annotation.
COSIGN_ATTESTATION_MANIFEST = {
    "schemaVersion": 2,
    "mediaType": OCI_MANIFEST,
    "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "size": 242,
        "digest": "sha256:" + "4" * 64,
    },
    "layers": [
        {
            "mediaType": DSSE,
            "size": 2311,
            "digest": "sha256:" + "5" * 64,
            "annotations": {"predicateType": "https://slsa.dev/provenance/v0.2"},
        }
    ],
}

# image-spec manifest.md "Artifact without config" (artifactType, empty config, one layer) with
# the `subject` of its "Example Image Manifest"; the artifact an SPDX document.
OCI_SPDX_SBOM = {
    "schemaVersion": 2,
    "mediaType": OCI_MANIFEST,
    "artifactType": SPDX,
    "config": {"mediaType": EMPTY_CONFIG, "digest": EMPTY_DIGEST, "size": 2},
    "layers": [
        {
            "mediaType": SPDX,
            "digest": "sha256:e258d248fda94c63753607f7c4494ee0fcbe92f1a76bfdac795c9d84101eb317",
            "size": 1234,
        }
    ],
    "subject": {"mediaType": OCI_MANIFEST, "digest": SPEC_SUBJECT, "size": 7682},
    "annotations": {"org.opencontainers.image.created": "2022-01-01T14:42:55Z"},
}

# The same with a CycloneDX document, and an in-toto statement (image-spec's artifact example).
OCI_CYCLONEDX_SBOM = {**OCI_SPDX_SBOM, "artifactType": CYCLONEDX}
OCI_IN_TOTO = {**OCI_SPDX_SBOM, "artifactType": IN_TOTO}
# image-spec manifest.md: "artifacts have historically been created without an artifactType
# field, and tooling ... should fallback to the config.mediaType value".
OCI_LEGACY_SBOM = {
    "schemaVersion": 2,
    "mediaType": OCI_MANIFEST,
    "config": {"mediaType": SPDX, "digest": "sha256:" + "6" * 64, "size": 10},
    "layers": [],
    "subject": {"mediaType": OCI_MANIFEST, "digest": SPEC_SUBJECT, "size": 7682},
}

# distribution-spec spec.md "Listing Referrers" response, as pushed to the referrers tag schema's
# tag (digests made whole).
FALLBACK_INDEX = {
    "schemaVersion": 2,
    "mediaType": OCI_INDEX,
    "manifests": [
        {
            "mediaType": OCI_MANIFEST,
            "size": 1234,
            "digest": "sha256:" + "a1" * 32,
            "artifactType": "application/vnd.example.sbom.v1",
            "annotations": {
                "org.opencontainers.image.created": "2022-01-01T14:42:55Z",
                "org.example.sbom.format": "json",
            },
        },
        {
            "mediaType": OCI_MANIFEST,
            "size": 1234,
            "digest": "sha256:" + "a2" * 32,
            "artifactType": "application/vnd.example.signature.v1",
            "annotations": {
                "org.opencontainers.image.created": "2022-01-01T07:21:33Z",
                "org.example.signature.fingerprint": "abcd",
            },
        },
        {
            "mediaType": OCI_INDEX,
            "size": 1234,
            "digest": "sha256:" + "a3" * 32,
            "annotations": {"org.opencontainers.image.created": "2023-01-01T07:21:33Z"},
        },
    ],
}


# --- Real referrers to push ------------------------------------------------------------------


@dataclass
class Artifact:
    """A referrer manifest with its blobs, pushable with images.RegistryPusher."""

    blobs: list
    manifest: bytes
    media_type: str = OCI_MANIFEST

    @property
    def digest(self):
        return sha256_digest(self.manifest)

    @property
    def size(self):
        return len(self.manifest)


def cosign_tag(subject_digest, suffix="sig"):
    return f"sha256-{subject_digest.split(':', 1)[1]}.{suffix}"


def fallback_tag(subject_digest):
    return f"sha256-{subject_digest.split(':', 1)[1]}"


def build_cosign_signature(subject_digest, repository="team/app"):
    """A cosign signature manifest as SIGNATURE_SPEC.md lays it out: the simplesigning payload
    (naming the subject) as the layer, its signature and certificate as layer annotations."""
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": repository},
                "image": {"docker-manifest-digest": subject_digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    ).encode()
    config = json.dumps(
        {
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(payload)]},
            "config": {},
        }
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": len(config),
            "digest": sha256_digest(config),
        },
        "layers": [
            {
                "mediaType": SIMPLESIGNING,
                "size": len(payload),
                "digest": sha256_digest(payload),
                "annotations": {
                    "dev.cosignproject.cosign/signature": SPEC_SIGNATURE,
                    "dev.sigstore.cosign/certificate": SPEC_CERTIFICATE,
                },
            }
        ],
    }
    return Artifact([config, payload], json.dumps(manifest).encode())


def build_oci_sbom(subject, artifact_type=SPDX):
    """An OCI 1.1 SBOM referrer (image-spec "Artifact without config") whose `subject` is the
    Image `subject`."""
    document = json.dumps(
        {
            "spdxVersion": "SPDX-2.3",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": "oyster-test",
            "documentNamespace": "https://example.invalid/" + subject.digest,
        }
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_CONFIG, "digest": EMPTY_DIGEST, "size": 2},
        "layers": [
            {"mediaType": artifact_type, "digest": sha256_digest(document), "size": len(document)}
        ],
        "subject": {
            "mediaType": subject.media_type,
            "digest": subject.digest,
            "size": len(subject.manifest),
        },
        "annotations": {"org.opencontainers.image.created": "2026-01-02T03:04:05Z"},
    }
    return Artifact([EMPTY_BLOB, document], json.dumps(manifest).encode())


def build_fallback_index(referrers):
    """The referrers tag schema's index listing OCI referrers (Artifacts with a subject)."""
    entries = []
    for artifact in referrers:
        data = json.loads(artifact.manifest)
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": artifact.digest,
                "size": artifact.size,
                "artifactType": data.get("artifactType", ""),
                "annotations": data.get("annotations", {}),
            }
        )
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return Artifact([], json.dumps(index).encode(), OCI_INDEX)


def push_artifact(pusher, repo, reference, artifact):
    for blob in artifact.blobs:
        pusher.push_blob(repo, blob)
    return pusher.put_manifest(repo, reference, artifact.manifest, artifact.media_type)


def b64(data):
    return base64.b64encode(data).decode()
