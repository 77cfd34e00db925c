"""The local index of repositories, tags and manifests: writes from notifications and portal
actions. The reconcile that walks the registry lives in `registry_admin.sync`.

Every write goes through these functions so the repository's denormalised counters
(`tag_count`, `total_size`, `last_push_at`, `is_empty`) stay right.
"""

from django.db import transaction
from django.db.models import Count, Max, Sum

from .models import Manifest, Repository, Tag


def refresh_repository_stats(repository):
    """Recompute a repository's counters from its tags (one aggregate query and one update)."""
    tags = Tag.objects.filter(repository=repository)
    stats = tags.aggregate(count=Count("id"), last_push=Max("pushed_at"))
    distinct_sizes = (
        Manifest.objects.filter(digest__in=tags.values("digest"))
        .aggregate(total=Sum("size"))
        .get("total")
    )
    Repository.objects.filter(pk=repository.pk).update(
        tag_count=stats["count"],
        is_empty=stats["count"] == 0,
        last_push_at=stats["last_push"],
        total_size=distinct_sizes or 0,
    )


def ensure_manifest(digest, media_type="", manifest_size=None):
    """The Manifest row for `digest`, created bare (details pending) when unknown."""
    manifest, created = Manifest.objects.get_or_create(
        digest=digest,
        defaults={"media_type": media_type or "", "manifest_size": manifest_size},
    )
    if not created and media_type and not manifest.media_type:
        manifest.media_type = media_type
        manifest.save(update_fields=["media_type"])
    return manifest


def upsert_tag(repository, tag, digest, pushed_at, media_type="", manifest_size=None):
    """Point `repository:tag` at `digest` (creating the repository and a bare manifest row).

    Returns (tag, manifest); `manifest.details_fetched_at is None` means details are pending.
    """
    with transaction.atomic():
        repo, _ = Repository.objects.get_or_create(name=repository)
        manifest = ensure_manifest(digest, media_type, manifest_size)
        existing = Tag.objects.filter(repository=repo, name=tag).first()
        if existing is None:
            existing = Tag.objects.create(
                repository=repo, name=tag, digest=digest, manifest=manifest, pushed_at=pushed_at
            )
        elif (
            existing.digest != digest
            or existing.manifest_id != manifest.pk
            or (pushed_at and (existing.pushed_at is None or pushed_at > existing.pushed_at))
        ):
            existing.digest, existing.manifest = digest, manifest
            if pushed_at and (existing.pushed_at is None or pushed_at > existing.pushed_at):
                existing.pushed_at = pushed_at
            existing.save()
        refresh_repository_stats(repo)
    return existing, manifest


def forget_tags(repository, tags):
    """Remove `tags` of `repository` from the index (after the registry deleted them).

    Unknown names are ignored. Returns the names actually removed.
    """
    with transaction.atomic():
        repo = Repository.objects.filter(name=repository).first()
        if repo is None:
            return []
        doomed = Tag.objects.filter(repository=repo, name__in=list(tags))
        names = sorted(doomed.values_list("name", flat=True))
        doomed.delete()
        refresh_repository_stats(repo)
    return names


def forget_digest(repository, digest):
    """Remove every tag of `repository` pointing at `digest` (the registry's DELETE by digest
    does exactly that). Returns the removed tag names, sorted."""
    with transaction.atomic():
        repo = Repository.objects.filter(name=repository).first()
        if repo is None:
            return []
        doomed = Tag.objects.filter(repository=repo, digest=digest)
        names = sorted(doomed.values_list("name", flat=True))
        doomed.delete()
        refresh_repository_stats(repo)
    return names
