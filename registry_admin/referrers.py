"""Signatures, SBOMs and attestations attached to an image ("referrers"), recognised from the
manifests themselves.

Three ways a registry without a referrers API (distribution 2.8 and 3.x) holds them:

- cosign's tag scheme (sigstore/cosign specs/SIGNATURE_SPEC.md, "Tag-based Discovery"): the
  subject's digest with `:` made `-` and a suffix, `sha256-<hex>.sig` (signatures), `.att`
  (in-toto attestations), `.sbom` (SBOMs). Such a tag is a referrer only when its subject is in
  the repository (a user may name a real tag that way).
- OCI image-spec 1.1 manifests carrying a `subject` descriptor: the kind comes from
  `artifactType`, else the config's media type, else the layers' media types.
- distribution-spec 1.1's "referrers tag schema": a tag `sha256-<hex>` (no suffix) pointing at
  an OCI image index whose `manifests` are the subject's referrers (each with its artifactType
  and annotations), kept by the clients that push referrers.

The pure functions here classify a manifest or a tag; `classify_tags` keeps the index's Tag rows
marked (called by `index.refresh_stats_of`, so notifications, reconciles and details fetches all
keep it); `discover` asks the registry itself right before a destructive action, since the index
is only a cache.
"""

import re
from dataclasses import dataclass, field

from django.db.models import Q

from .models import AuditEvent, Manifest, Tag
from .references import is_valid_digest

SIGNATURE = "signature"
SBOM = "sbom"
ATTESTATION = "attestation"
OTHER = "other"
# The referrers tag schema's index: a list of referrers, not an artifact of its own.
INDEX = "index"
KINDS = (SIGNATURE, SBOM, ATTESTATION, OTHER)
KIND_LABELS = {SIGNATURE: "signature", SBOM: "SBOM", ATTESTATION: "attestation", OTHER: "artifact"}
# The badge's words (the repository and tag pages).
BADGE_WORDS = {SIGNATURE: "signed", SBOM: "SBOM", ATTESTATION: "attestation", OTHER: "artifact"}

COSIGN_SUFFIXES = {"sig": SIGNATURE, "att": ATTESTATION, "sbom": SBOM}
# At most this many referrers of one image are read and deleted with it (a fallback index may
# list anything: each entry costs a manifest read).
MAX_REFERRERS = 1000
_REFERRER_TAG = re.compile(r"^sha256-([0-9a-f]{64})(?:\.(sig|att|sbom))?$")

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
IMAGE_CONFIGS = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)

# Annotations shown as text (never verified); longer values are cut.
_ANNOTATION_LIMIT = 40
_ANNOTATION_VALUE_LIMIT = 4000
# The annotations worth a line of their own on the tag page, in this order.
SHOWN_ANNOTATIONS = (
    "dev.sigstore.cosign/certificate",
    "dev.cosignproject.cosign/signature",
    "predicateType",
    "org.opencontainers.image.created",
)


@dataclass(frozen=True)
class Recognised:
    """What a manifest or tag is as a referrer: its subject, kind, and how it was told."""

    subject: str
    kind: str
    # "cosign-tag", "subject" (OCI 1.1 field) or "fallback-index" (referrers tag schema).
    source: str
    artifact_type: str = ""


@dataclass(frozen=True)
class Referrer:
    """One referrer of a subject as the registry holds it now (`discover`)."""

    digest: str
    kind: str
    tag: str = ""  # "" for an untagged OCI referrer (listed by the fallback index)
    size: int = 0
    media_type: str = ""
    artifact_type: str = ""
    annotations: dict = field(default_factory=dict)


def referrer_tag_parts(tag):
    """(subject digest, cosign suffix or "") for a tag named like a referrer, else None."""
    match = _REFERRER_TAG.match(tag or "")
    if not match:
        return None
    return "sha256:" + match.group(1), match.group(2) or ""


def fallback_tag(subject):
    """The referrers tag schema's tag for `subject` (`sha256-<hex>`)."""
    algorithm, _, encoded = subject.partition(":")
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '-', algorithm[:32])}-{encoded[:64]}"


def cosign_tags(subject):
    """The tags cosign would give `subject`'s signature, attestation and SBOM."""
    return [f"{fallback_tag(subject)}.{suffix}" for suffix in COSIGN_SUFFIXES]


def kind_of(artifact_type="", config_media_type="", layer_media_types=()):
    """signature, sbom, attestation or other: from artifactType, else the config's media type,
    else the layers' (image-spec 1.1 says tooling falls back to config.mediaType)."""
    candidates = [artifact_type]
    if config_media_type and config_media_type not in (EMPTY_CONFIG, *IMAGE_CONFIGS):
        candidates.append(config_media_type)
    candidates.extend(layer_media_types)
    for media_type in candidates:
        kind = _kind_of_type(media_type)
        if kind:
            return kind
    return OTHER


def _kind_of_type(media_type):
    text = (media_type or "").lower()
    if not text:
        return ""
    if "spdx" in text or "cyclonedx" in text or "syft" in text or "sbom" in text:
        return SBOM
    if "in-toto" in text or "intoto" in text or "dsse" in text or "provenance" in text:
        return ATTESTATION
    if (
        "signature" in text
        or "simplesigning" in text
        or "sigstore.bundle" in text
        or "notary" in text
        or text == "application/cose"
    ):
        return SIGNATURE
    return ""


def _descriptors(value):
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _str(value, limit=255):
    return value[:limit] if isinstance(value, str) else ""


def annotations_of(data):
    """The manifest's annotations, then its layers' (cosign keeps the signature and the
    certificate there), as {str: str}, capped in number and length."""
    found = {}
    sources = [data.get("annotations")]
    sources.extend(layer.get("annotations") for layer in _descriptors(data.get("layers")))
    for annotations in sources:
        if not isinstance(annotations, dict):
            continue
        for key, value in annotations.items():
            if len(found) >= _ANNOTATION_LIMIT:
                return found
            if isinstance(key, str) and isinstance(value, str) and key not in found:
                found[key[:200]] = value[:_ANNOTATION_VALUE_LIMIT]
    return found


def manifest_artifact(data):
    """(artifact kind, artifact type) of a manifest document (a dict): its artifactType, else
    its config's media type (when not an image's), else its layers' kinds."""
    if not isinstance(data, dict):
        return OTHER, ""
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    artifact_type = _str(data.get("artifactType"))
    config_type = _str(config.get("mediaType"))
    layer_types = [_str(layer.get("mediaType")) for layer in _descriptors(data.get("layers"))]
    kind = kind_of(artifact_type, config_type, layer_types)
    shown_type = artifact_type
    if not shown_type and config_type not in ("", EMPTY_CONFIG, *IMAGE_CONFIGS):
        shown_type = config_type
    if not shown_type and layer_types:
        shown_type = layer_types[0]
    return kind, shown_type


def subject_of(data):
    """The digest a manifest's `subject` descriptor names, or ""."""
    subject = data.get("subject") if isinstance(data, dict) else None
    digest = subject.get("digest") if isinstance(subject, dict) else None
    return digest if isinstance(digest, str) and is_valid_digest(digest) else ""


def manifest_fields(data):
    """The Manifest row's referrer fields for a manifest document (image_details stores them):
    empty for a manifest without `subject` (an image, or a cosign manifest, which the tag
    names), except the annotations, kept for every manifest that has some."""
    subject = subject_of(data)
    fields = {
        "subject_digest": subject,
        "artifact_kind": "",
        "artifact_type": "",
        "annotations": annotations_of(data) if isinstance(data, dict) else {},
    }
    if subject:
        fields["artifact_kind"], fields["artifact_type"] = manifest_artifact(data)
    elif isinstance(data, dict):
        # cosign's manifests have no subject: their kind still shows on the tag page.
        kind, artifact_type = manifest_artifact(data)
        if kind != OTHER or data.get("artifactType"):
            fields["artifact_kind"], fields["artifact_type"] = kind, artifact_type
    return fields


def classify(data, media_type="", tag="", subject_present=None):
    """A Recognised for a manifest (its parsed JSON `data`, its media type and the tag naming
    it, if any), or None when it is not a referrer.

    `subject_present(digest)` says whether the repository holds a digest; cosign's tags and
    the fallback index tag are referrers only when it does (None: assume it does).
    """
    present = subject_present or (lambda digest: True)
    parts = referrer_tag_parts(tag)
    if parts:
        subject, suffix = parts
        media_type = media_type or (data.get("mediaType") if isinstance(data, dict) else "") or ""
        if suffix and present(subject):
            kind = COSIGN_SUFFIXES[suffix]
            _, artifact_type = manifest_artifact(data)
            return Recognised(subject, kind, "cosign-tag", artifact_type)
        if not suffix and media_type == OCI_INDEX and present(subject):
            return Recognised(subject, INDEX, "fallback-index")
    subject = subject_of(data)
    if subject:
        kind, artifact_type = manifest_artifact(data)
        return Recognised(subject, kind, "subject", artifact_type)
    return None


def fallback_entries(data):
    """The referrers a fallback index lists: [Referrer] from its `manifests` descriptors."""
    found = []
    for entry in _descriptors(data.get("manifests") if isinstance(data, dict) else None):
        digest = entry.get("digest")
        if not (isinstance(digest, str) and is_valid_digest(digest)):
            continue
        artifact_type = _str(entry.get("artifactType"))
        annotations = entry.get("annotations") if isinstance(entry.get("annotations"), dict) else {}
        size = entry.get("size") if isinstance(entry.get("size"), int) else 0
        found.append(
            Referrer(
                digest=digest,
                kind=kind_of(artifact_type) if artifact_type else OTHER,
                size=max(size, 0),
                media_type=_str(entry.get("mediaType")),
                artifact_type=artifact_type,
                annotations={
                    str(k)[:200]: str(v)[:_ANNOTATION_VALUE_LIMIT]
                    for k, v in list(annotations.items())[:_ANNOTATION_LIMIT]
                },
            )
        )
    return found


# --- The index: which tags are referrers -----------------------------------------------------


def classify_tags(repository_ids):
    """Mark the Tag rows of these repositories that are referrers (subject and kind) and unmark
    the others: one query for the candidates (tags named like a referrer, tags on a manifest
    with a subject, tags marked before) and one update per changed row."""
    ids = list(repository_ids)
    if not ids:
        return 0
    candidates = list(
        Tag.objects.filter(repository_id__in=ids)
        .filter(
            Q(name__startswith="sha256-")
            | Q(manifest__subject_digest__gt="")
            | Q(subject_digest__gt="")
        )
        .select_related("manifest")
        .only(
            "pk",
            "repository_id",
            "name",
            "digest",
            "subject_digest",
            "referrer_kind",
            "manifest__media_type",
            "manifest__subject_digest",
            "manifest__artifact_kind",
        )
    )
    if not candidates:
        return 0
    subjects = set()
    for tag in candidates:
        parts = referrer_tag_parts(tag.name)
        if parts:
            subjects.add(parts[0])
    present = set()
    if subjects:
        for chunk in _chunks(sorted(subjects), 500):
            present.update(
                Tag.objects.filter(repository_id__in=ids, digest__in=chunk).values_list(
                    "repository_id", "digest"
                )
            )
    changes = {}
    for tag in candidates:
        marks = _tag_marks(tag, present)
        if marks != (tag.subject_digest, tag.referrer_kind):
            changes.setdefault(marks, []).append(tag.pk)
    for (subject, kind), pks in changes.items():
        for chunk in _chunks(pks, 500):
            Tag.objects.filter(pk__in=chunk).update(subject_digest=subject, referrer_kind=kind)
    return sum(len(pks) for pks in changes.values())


def _chunks(items, size):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _tag_marks(tag, present):
    manifest = tag.manifest
    parts = referrer_tag_parts(tag.name)
    if parts and (tag.repository_id, parts[0]) in present:
        subject, suffix = parts
        if suffix:
            return subject, COSIGN_SUFFIXES[suffix]
        # The fallback index: an OCI index (or not known yet: the notification said so).
        if manifest is None or manifest.media_type in ("", OCI_INDEX):
            return subject, INDEX
    if manifest is not None and manifest.subject_digest:
        return manifest.subject_digest, manifest.artifact_kind or OTHER
    return "", ""


def real_tags(queryset):
    """`queryset` of Tags without the referrer tags."""
    return queryset.filter(referrer_kind="")


# --- The registry, right before a destructive action -----------------------------------------


def discover(refs, subject, read, candidates=None):
    """The referrers of `subject` in a repository as the registry holds them now.

    `refs` is {tag: ManifestRef} of the repository's tags and `read(digest)` reads one of its
    manifests (None: gone), both from deletes.LiveRepository. Finds cosign's
    tags, the fallback index tag with every manifest it lists, and tags on manifests whose own
    `subject` is `subject` (among `candidates`, tag names to read; None: every OCI manifest
    tag); then the referrers of those (a signature of an SBOM), once each.
    Raises registry.RegistryError when the registry fails.
    """
    found, seen, expanded = [], set(), {subject}
    queue = [subject]
    while queue and len(found) < MAX_REFERRERS:
        current = queue.pop(0)
        for referrer in _direct(read, refs, current, candidates):
            key = (referrer.digest, referrer.tag)
            if key in seen or referrer.digest == subject:
                continue
            seen.add(key)
            found.append(referrer)
            if referrer.kind != INDEX and referrer.digest not in expanded:
                expanded.add(referrer.digest)
                queue.append(referrer.digest)
    # Never an image another tag still names: a hostile or mistaken cosign tag or fallback
    # index pointing at a real image must not take it down with the subject.
    referrer_tags = {r.tag for r in found if r.tag}
    kept = {ref.digest for tag, ref in refs.items() if tag not in referrer_tags}
    return [r for r in found if r.digest not in kept][:MAX_REFERRERS]


def _direct(read, refs, subject, candidates):
    out = []
    for tag in cosign_tags(subject):
        ref = refs.get(tag)
        if ref is not None:
            suffix = tag.rsplit(".", 1)[1]
            data = _data(read(ref.digest))
            _, artifact_type = manifest_artifact(data) if data else (OTHER, "")
            out.append(
                Referrer(
                    ref.digest,
                    COSIGN_SUFFIXES[suffix],
                    tag,
                    size=_size(ref),
                    media_type=ref.media_type,
                    artifact_type=artifact_type,
                    annotations=annotations_of(data) if data else {},
                )
            )
    index_tag = fallback_tag(subject)
    ref = refs.get(index_tag)
    listed = set()
    if ref is not None:
        data = _data(read(ref.digest))
        if data is not None and (ref.media_type == OCI_INDEX or "manifests" in data):
            out.append(Referrer(ref.digest, INDEX, index_tag, _size(ref), ref.media_type))
            for entry in fallback_entries(data)[:MAX_REFERRERS]:
                listed.add(entry.digest)
                child = _data(read(entry.digest))
                # Listed but gone (nothing to delete), or not a referrer of this image (the
                # index is kept by clients: only a manifest whose own `subject` names it is).
                if child is None or subject_of(child) != subject:
                    continue
                if not entry.artifact_type:
                    kind, artifact_type = manifest_artifact(child)
                    entry = Referrer(
                        entry.digest,
                        kind,
                        size=entry.size,
                        media_type=entry.media_type,
                        artifact_type=artifact_type,
                        annotations=entry.annotations,
                    )
                out.append(entry)
    # Tagged manifests whose own `subject` names it (pushed by a client that tagged them).
    skip = {index_tag, *cosign_tags(subject)}
    for tag, tag_ref in sorted(refs.items()):
        if tag in skip or tag_ref.digest in listed:
            continue
        if candidates is not None and tag not in candidates:
            continue
        if tag_ref.media_type not in ("", OCI_MANIFEST):
            continue
        data = _data(read(tag_ref.digest))
        if data is not None and subject_of(data) == subject:
            kind, artifact_type = manifest_artifact(data)
            out.append(
                Referrer(
                    tag_ref.digest,
                    kind,
                    tag,
                    size=_size(tag_ref),
                    media_type=tag_ref.media_type,
                    artifact_type=artifact_type,
                    annotations=annotations_of(data),
                )
            )
    return out


def _data(document):
    if document is None:
        return None
    data = getattr(document, "data", document)
    return data if isinstance(data, dict) else None


def _size(ref):
    size = getattr(ref, "size", None)
    return size if isinstance(size, int) and size > 0 else 0


# --- What the pages show ---------------------------------------------------------------------


def attached_artifacts(repository_id, subjects):
    """{subject digest: [artifact dict]} of what the index knows is attached to each of
    `subjects` in the repository: cosign's tags and tagged OCI referrers (one each), and every
    referrer the fallback index lists (an untagged OCI referrer). Each dict has kind, label,
    tag, digest, size, artifact_type, pushed_at, annotations; one query."""
    rows = (
        Tag.objects.filter(repository_id=repository_id, subject_digest__in=list(subjects))
        .exclude(referrer_kind="")
        .select_related("manifest")
        .only(
            "name",
            "digest",
            "subject_digest",
            "referrer_kind",
            "pushed_at",
            "manifest__size",
            "manifest__manifest_size",
            "manifest__artifact_type",
            "manifest__annotations",
            "manifest__platforms",
        )
        .order_by("name")
    )
    found = {}
    for tag in rows:
        manifest = tag.manifest
        seen = found.setdefault(tag.subject_digest, {})
        if tag.referrer_kind == INDEX:
            for entry in (manifest.platforms or []) if manifest else []:
                if not isinstance(entry, dict) or entry.get("digest") in seen:
                    continue
                kind = entry.get("kind") or OTHER
                seen[entry.get("digest")] = _artifact(
                    kind,
                    "",
                    entry.get("digest", ""),
                    entry.get("size"),
                    entry.get("artifact_type", ""),
                    tag.pushed_at,
                    entry.get("annotations") or {},
                    via_tag=tag.name,
                )
            continue
        seen[tag.digest] = _artifact(
            tag.referrer_kind,
            tag.name,
            tag.digest,
            (manifest.size if manifest else None),
            manifest.artifact_type if manifest else "",
            tag.pushed_at,
            (manifest.annotations if manifest else {}) or {},
        )
    return {subject: list(items.values()) for subject, items in found.items()}


def _artifact(kind, tag, digest, size, artifact_type, pushed_at, annotations, via_tag=""):
    annotations = annotations if isinstance(annotations, dict) else {}
    shown = [(key, annotations[key]) for key in SHOWN_ANNOTATIONS if key in annotations]
    shown += sorted(
        (k, v) for k, v in annotations.items() if k not in SHOWN_ANNOTATIONS and len(shown) < 12
    )[: max(0, 12 - len(shown))]
    return {
        "kind": kind,
        "label": KIND_LABELS.get(kind, "artifact"),
        "tag": tag,
        "digest": digest,
        "size": size if isinstance(size, int) else None,
        "artifact_type": artifact_type or "",
        "pushed_at": pushed_at,
        "annotations": shown,
        # The tag whose push brought it: its own, or the fallback index listing it.
        "via_tag": via_tag or tag,
        "pushed_by": "",
    }


def add_pushers(repository, artifacts):
    """Fill each artifact's `pushed_by` with the registry user of the newest push of its tag
    (cosign's, or the fallback index's that listed it) in the audit log: one query on the
    log's tag index (these tag names are rare)."""
    tags = {a["via_tag"] for a in artifacts if a.get("via_tag")}
    if not tags:
        return artifacts
    actors = {}
    rows = (
        AuditEvent.objects.filter(
            tag__in=tags, repository=repository, action="push", kind="manifest"
        )
        .order_by("-timestamp", "-id")
        .values_list("tag", "actor")[:200]
    )
    for tag, actor in rows:
        actors.setdefault(tag, actor)
    for artifact in artifacts:
        artifact["pushed_by"] = actors.get(artifact.get("via_tag"), "")
    return artifacts


def badge_counts(artifacts):
    """[(word, count)] for a list of attached artifacts (dicts or Referrers with a `kind`),
    in a fixed order, only kinds that occur."""
    counts = {}
    for artifact in artifacts:
        kind = artifact["kind"] if isinstance(artifact, dict) else artifact.kind
        if kind in KINDS:
            counts[kind] = counts.get(kind, 0) + 1
    return [(BADGE_WORDS[kind], counts[kind]) for kind in KINDS if kind in counts]


# --- The audit log ---------------------------------------------------------------------------


def describe_pushes(events):
    """Set `referrer_text` ("signature pushed for team/app:1.0") on the manifest pushes among
    `events` (AuditEvents) that are referrers: cosign's tags and the fallback index tag (named
    after an image the index knows in that repository) and manifests the index knows carry a
    `subject`. Two queries for a page of events; the others get "".
    """
    pushes = [e for e in events if e.action == "push" and e.kind == "manifest" and e.repository]
    for event in events:
        event.referrer_text = ""
    by_event, unnamed = {}, []
    for event in pushes:
        parts = referrer_tag_parts(event.tag)
        if parts:
            subject, suffix = parts
            by_event[event.pk] = (COSIGN_SUFFIXES[suffix] if suffix else INDEX, subject)
        elif event.digest:
            unnamed.append(event)
    if unnamed:
        known = {
            digest: (kind or OTHER, subject)
            for digest, subject, kind in Manifest.objects.filter(
                digest__in={e.digest for e in unnamed}
            )
            .exclude(subject_digest="")
            .values_list("digest", "subject_digest", "artifact_kind")
        }
        # Untagged ones the fallback index of their repository lists (its entries' kinds).
        listing = Tag.objects.filter(
            repository__name__in={e.repository for e in unnamed}, referrer_kind=INDEX
        ).values_list("repository__name", "subject_digest", "manifest__platforms")
        listed = {}
        for repository, subject, entries in listing:
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict) and entry.get("digest"):
                    listed[(repository, entry["digest"])] = (entry.get("kind") or OTHER, subject)
        for event in unnamed:
            found = known.get(event.digest) or listed.get((event.repository, event.digest))
            if found:
                by_event[event.pk] = found
    if not by_event:
        return events
    names = {}
    rows = Tag.objects.filter(
        repository__name__in={e.repository for e in pushes},
        digest__in={subject for _, subject in by_event.values()},
        referrer_kind="",
    ).values_list("repository__name", "digest", "name")
    for repository, digest, name in rows.order_by("name"):
        names.setdefault((repository, digest), []).append(name)
    for event in pushes:
        if event.pk not in by_event:
            continue
        kind, subject = by_event[event.pk]
        tags = names.get((event.repository, subject))
        named = referrer_tag_parts(event.tag) is not None
        if named and not tags:
            continue  # named like one, but no image of the repository has that digest
        label = KIND_LABELS.get(kind, "referrers index")
        target = f"{event.repository}:{tags[0]}" if tags else f"{event.repository}@{subject[:19]}"
        event.referrer_text = f"{label} pushed for {target}"
    return events
