"""The unused report: per tag and per repository, when it was last pulled or pushed, whether
it counts as unused over a number of days, and what keeping it costs (the storage scan's
unique bytes at the configured price per GiB). Pull figures come from `pulls`.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from . import pulls
from .models import Manifest, PullCount, RepositoryStorage, StorageSnapshot, Tag

Scope = PullCount.Scope
GIB = 1024**3


@dataclass(kw_only=True)
class UsageVerdict:
    """When a tag or repository was last used, and what keeping it costs."""

    last_pulled: datetime | None
    pushed: datetime | None
    # "unused", or "no_data": pushed before the portal watched and not pulled since.
    status: str
    unique_bytes: int | None
    monthly_cost: float | None

    def verdict_json(self, no_data_before):
        return {
            "status": self.status,
            "last_pulled": _iso(self.last_pulled),
            "pushed": _iso(self.pushed),
            "no_data_before": _iso(no_data_before) if self.status == "no_data" else None,
            "unique_bytes": self.unique_bytes,
            "monthly_cost": self.monthly_cost,
        }


@dataclass(kw_only=True)
class UnusedTag(UsageVerdict):
    repository: str
    tag: str
    digest: str

    def as_json(self, no_data_before):
        return {
            "repository": self.repository,
            "tag": self.tag,
            "digest": self.digest,
            **self.verdict_json(no_data_before),
        }


@dataclass(kw_only=True)
class UnusedRepository(UsageVerdict):
    name: str
    tags: list = field(default_factory=list)

    def as_json(self, no_data_before):
        return {"repository": self.name, **self.verdict_json(no_data_before)}


@dataclass
class UnusedReport:
    days: int
    cutoff: datetime
    watching_since: datetime | None
    snapshot: StorageSnapshot | None
    price_per_gb_month: float
    tags: list
    repositories: list

    @property
    def unused_tags(self):
        return [t for t in self.tags if t.status == "unused"]

    @property
    def no_data_tags(self):
        return [t for t in self.tags if t.status == "no_data"]

    @property
    def unused_repositories(self):
        return [r for r in self.repositories if r.status == "unused"]

    @property
    def unused_repository_bytes(self):
        return sum(r.unique_bytes or 0 for r in self.unused_repositories)

    @property
    def unused_repository_cost(self):
        return cost(self.unused_repository_bytes, self.price_per_gb_month)

    def as_json(self):
        return {
            "days": self.days,
            "cutoff": _iso(self.cutoff),
            "watching_since": _iso(self.watching_since),
            "storage_scan": _iso(self.snapshot.created_at) if self.snapshot else None,
            "price_per_gb_month": self.price_per_gb_month,
            "tags": [t.as_json(self.watching_since) for t in self.tags],
            "repositories": [r.as_json(self.watching_since) for r in self.repositories],
        }


def cost(size, price):
    return None if size is None else round(size / GIB * price, 6)


def _iso(value):
    return value.astimezone(UTC).isoformat() if value else None


def _status(last_pulled, pushed, cutoff, since):
    """unused, no_data or None (used recently)."""
    if last_pulled is None and (pushed is None or since is None or pushed < since):
        # Pushed before the portal saw any event: pulls before then are unknown.
        return "no_data"
    activity = last_pulled or pushed
    return "unused" if activity <= cutoff else None


def unused_report(days, now=None):
    """Tags and repositories whose last real pull (never pulled: their push) is at least `days`
    days old; `days=0` lists every tag. Bytes come from the latest storage scan."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=days)
    since = pulls.watching_since()
    price = settings.STORAGE_PRICE_PER_GB_MONTH
    snapshot = StorageSnapshot.objects.latest_snapshot()
    repository_bytes = {}
    if snapshot is not None:
        repository_bytes = dict(
            RepositoryStorage.objects.filter(snapshot=snapshot).values_list("name", "unique_bytes")
        )

    last_by_tag = _latest(Scope.TAG)
    last_by_digest = _latest(Scope.DIGEST)
    last_by_repository = {repo: when for (repo, _), when in _latest(Scope.REPOSITORY).items()}
    rows = list(
        Tag.objects.select_related("repository")
        .order_by("repository__name", "name")
        .values_list(
            "repository__name", "name", "digest", "pushed_at", "referrer_kind", "subject_digest"
        )
    )
    tag_bytes = unique_bytes_per_tag([row[:4] for row in rows])
    # Signatures, SBOMs, attestations are no tags of their own here: their bytes count under
    # their image's tag, when deleting that tag deletes the image (it is the image's only tag).
    attached = defaultdict(int)
    real_tags_on = defaultdict(int)
    for repository, name, digest, _, kind, subject in rows:
        if kind and subject:
            attached[(repository, subject)] += tag_bytes.get((repository, name)) or 0
        elif not kind:
            real_tags_on[(repository, digest)] += 1
    tags = [row[:4] for row in rows if not row[4]]

    report_tags, by_repository = [], defaultdict(list)
    for repository, name, digest, pushed in tags:
        # A pull of the image by digest uses the tag's image as much as a pull of the tag.
        pulled = [
            w
            for w in (last_by_tag.get((repository, name)), last_by_digest.get((repository, digest)))
            if w
        ]
        last = max(pulled) if pulled else None
        status = _status(last, pushed, cutoff, since)
        by_repository[repository].append((last, pushed, status))
        if status is None:
            continue
        size = tag_bytes.get((repository, name))
        if size is not None and real_tags_on[(repository, digest)] == 1:
            size += attached.get((repository, digest), 0)
        report_tags.append(
            UnusedTag(
                repository=repository,
                tag=name,
                digest=digest,
                **_verdict(last, pushed, status, size, price),
            )
        )

    report_repositories = []
    for repository, rows in sorted(by_repository.items()):
        if any(status is None for _, _, status in rows):
            continue
        last = last_by_repository.get(repository)
        pushes = [pushed for _, pushed, _ in rows if pushed]
        pushed = max(pushes) if pushes else None
        status = "no_data" if all(s == "no_data" for _, _, s in rows) else "unused"
        size = repository_bytes.get(repository)
        report_repositories.append(
            UnusedRepository(name=repository, **_verdict(last, pushed, status, size, price))
        )
    return UnusedReport(days, cutoff, since, snapshot, price, report_tags, report_repositories)


def _verdict(last_pulled, pushed, status, unique_bytes, price):
    return {
        "last_pulled": last_pulled,
        "pushed": pushed,
        "status": status,
        "unique_bytes": unique_bytes,
        "monthly_cost": cost(unique_bytes, price),
    }


def _latest(scope):
    return {
        (row["repository"], row["ref"]): row["last"]
        for row in PullCount.objects.filter(scope=scope)
        .values("repository", "ref")
        .annotate(last=Max("last_pulled_at"))
    }


def unique_bytes_per_tag(tags):
    """{(repository, tag): bytes that deleting this tag alone would free}, from the images the
    index has read: the blobs that no other tag of any repository uses. Those are the image's
    manifest, config and layers; for a multi-platform image, the index itself and each
    platform's manifest, config and layers (the collector frees every one of them). None
    where the image's details are not known yet."""
    digests = {digest for _, _, digest, _ in tags}
    manifests = {
        m["digest"]: m
        for m in Manifest.objects.filter(digest__in=digests).values(
            "digest", "size", "manifest_size", "config_digest", "layers", "platforms", "is_index"
        )
    }
    child_digests = {
        p.get("digest")
        for m in manifests.values()
        if m["is_index"]
        for p in m["platforms"] or []
        if isinstance(p, dict) and p.get("digest")
    }
    children = {
        m["digest"]: m
        for m in Manifest.objects.filter(digest__in=child_digests).values(
            "digest", "size", "manifest_size", "config_digest", "layers", "platforms", "is_index"
        )
    }

    def blobs(manifest):
        """{blob digest: size} of one image manifest (a Manifest row, or an index's platform
        entry read with its details), or None when unknown."""
        if manifest is None or manifest.get("size") is None or "layers" not in manifest:
            return None
        layers = {
            layer["digest"]: int(layer.get("size") or 0)
            for layer in manifest["layers"] or []
            if isinstance(layer, dict) and layer.get("digest")
        }
        if manifest.get("config_digest"):
            layers[manifest["config_digest"]] = max(0, manifest["size"] - sum(layers.values()))
        # The manifest is a blob of its own in the registry's storage.
        layers[manifest["digest"]] = manifest.get("manifest_size") or 0
        return layers

    image_blobs = {}
    for digest in digests:
        manifest = manifests.get(digest)
        if manifest is not None and manifest["is_index"]:
            found = {digest: manifest["manifest_size"] or 0}
            for child in manifest["platforms"] or []:
                if not isinstance(child, dict):
                    found = None
                    break
                part = blobs(children.get(child.get("digest")) or child)
                if part is None:
                    found = None
                    break
                found.update(part)
            image_blobs[digest] = found
        else:
            image_blobs[digest] = blobs(manifest)

    users = defaultdict(int)  # blob -> tags using it
    for _, _, digest, _ in tags:
        for blob in image_blobs.get(digest) or {}:
            users[blob] += 1
    result = {}
    for repository, name, digest, _ in tags:
        found = image_blobs.get(digest)
        result[(repository, name)] = (
            None if found is None else sum(s for b, s in found.items() if users[b] == 1)
        )
    return result
