"""The registry's grammar for repository names, tags and digests.

Reference: https://github.com/distribution/reference/blob/main/reference.go

Anything a user types (a form field, a CLI argument) is checked here before it reaches a registry
URL, so a name like `../v2/_catalog` or `<script>` never becomes part of a request path.
"""

import re

from django.db import models

# Patterns are used with fullmatch (a `$` would accept a trailing newline).
# One path component: lowercase alphanumerics separated by `.`, `_`, `__` or runs of `-`.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,128}")
REPOSITORY_MAX_LENGTH = 255


class RegistryAction(models.TextChoices):
    """What the registry does to a repository: the notification events' `action`, the token
    scopes' actions (all but mount) and the dashboard's push and pull counts."""

    PUSH = "push"
    PULL = "pull"
    MOUNT = "mount"
    DELETE = "delete"


# Manifest media types (OCI image-spec; Docker's image manifest v2 schema 2).
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
# An OCI image index or a Docker manifest list: a manifest that lists other manifests.
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
# A single image's manifest: it lists no other manifest.
IMAGE_MEDIA_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
# Every manifest type the registry may name in an event (schema 1 and OCI artifacts too).
MANIFEST_MEDIA_TYPES = frozenset(
    {
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_LIST,
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.oci.artifact.manifest.v1+json",
    }
)


class InvalidReferenceError(ValueError):
    """A name that the registry's grammar does not allow; str(error) is a sentence for the page."""


def is_valid_repository(name):
    """True for a repository name the registry accepts (`team/app`, never `..` or `A`)."""
    return (
        isinstance(name, str)
        and len(name) <= REPOSITORY_MAX_LENGTH
        and REPOSITORY_RE.fullmatch(name) is not None
    )


def is_valid_tag(tag):
    return isinstance(tag, str) and TAG_RE.fullmatch(tag) is not None


def is_valid_digest(digest):
    return (
        isinstance(digest, str) and len(digest) <= 150 and DIGEST_RE.fullmatch(digest) is not None
    )


def is_valid_reference(reference):
    """A tag or a digest."""
    return is_valid_tag(reference) or is_valid_digest(reference)


def _shown(value, limit=80):
    """The value as it may appear in a message: control characters escaped, cut short."""
    text = repr(value)[1:-1]
    return text if len(text) <= limit else text[:limit] + "…"


def _check(value, what, max_length, pattern, grammar):
    if not isinstance(value, str) or not value:
        raise InvalidReferenceError(f"A {what} is required.")
    if len(value) > max_length:
        raise InvalidReferenceError(
            f"A {what} has at most {max_length} characters ({len(value)} given)."
        )
    if not pattern.fullmatch(value):
        raise InvalidReferenceError(f"“{_shown(value)}” is not a valid {what}: {grammar}")
    return value


def check_repository(name):
    """Return `name` when it is a valid repository name; raise InvalidReferenceError otherwise."""
    return _check(
        name,
        "repository name",
        REPOSITORY_MAX_LENGTH,
        REPOSITORY_RE,
        "lowercase letters, digits and separators (. _ -) in components joined by /.",
    )


def check_tag(tag):
    """Return `tag` when it is a valid tag; raise InvalidReferenceError otherwise."""
    return _check(tag, "tag", 128, TAG_RE, "letters, digits, _ . and -, not starting with . or -.")


def check_digest(digest):
    """Return `digest` when it looks like `sha256:<hex>`; raise InvalidReferenceError otherwise."""
    if not isinstance(digest, str) or not digest:
        raise InvalidReferenceError("A digest is required.")
    if len(digest) > 150 or not DIGEST_RE.fullmatch(digest):
        raise InvalidReferenceError(
            f"“{_shown(digest)}” is not a valid digest: expected sha256: followed by 64 hex "
            "characters."
        )
    return digest


def parse_reference(text):
    """Split `REPO:TAG` or `REPO@DIGEST` into (repository, tag, digest); one of tag/digest is "".

    Raises InvalidReferenceError with a sentence for anything else.
    """
    if not isinstance(text, str) or not text:
        raise InvalidReferenceError("Give REPOSITORY:TAG or REPOSITORY@sha256:DIGEST.")
    if "@" in text:
        repository, _, digest = text.partition("@")
        return check_repository(repository), "", check_digest(digest)
    repository, sep, tag = text.rpartition(":")
    if not sep or "/" in tag:
        raise InvalidReferenceError(
            f"“{_shown(text)}” names no tag: give REPOSITORY:TAG or REPOSITORY@sha256:DIGEST."
        )
    return check_repository(repository), check_tag(tag), ""


def index_children(data):
    """{child digest: its media type} of an image index's or manifest list's `manifests`, in
    order, each once; entries that are not objects with a valid digest are left out."""
    found = {}
    for entry in data.get("manifests") or []:
        digest = entry.get("digest") if isinstance(entry, dict) else None
        if is_valid_digest(digest) and digest not in found:
            found[digest] = str(entry.get("mediaType") or "")
    return found


def reachable(roots, references_of):
    """The set of manifest digests `roots` reach, roots included, following `references_of`
    (digest -> the manifest digests it references: an index's children) to any depth.

    The one rule for what a tag keeps: the storage scan (untagged revisions) and the untagged
    cleanup's live check both ask it, so an index inside an index keeps its children in both.
    Digests are whatever the caller uses (strings, or the scan's 32 raw bytes); a cycle ends.
    """
    reached = set()
    queue = list(roots)
    while queue:
        digest = queue.pop()
        if digest in reached:
            continue
        reached.add(digest)
        queue.extend(child for child in references_of(digest) if child not in reached)
    return reached
