"""Repositories and tags: the list, one repository's tags, and a tag or manifest in detail.

The list and repository pages read the index only; the detail page asks the registry live and
falls back to the index with a notice when it cannot.
"""

import json
from urllib.parse import urlsplit

from django.conf import settings
from django.shortcuts import render

from .. import browse, image_details, pulls, quotas, references, referrers, registry, usage, worker
from ..forms.repositories import RepositoryFilterForm, TagFilterForm
from ..models import JobKind, Manifest, Repository, Tag

REPOSITORIES_PER_PAGE = 50
TAGS_PER_PAGE = 50


def repository_list(request):
    form = RepositoryFilterForm(request.GET)
    form.is_valid()
    # A bad page link or search is named on the page; the rest of the filter still applies.
    filters = {name: value for name, value in form.cleaned_data.items() if name not in form.errors}
    sort = filters.get("sort") or "name"
    counts = browse.header_totals()
    page = browse.repository_page(
        filters.get("q", ""),
        sort,
        filters.get("empty", False),
        after=filters.get("after") or None,
        before=filters.get("before") or None,
        last=filters.get("page") == "last",
        per_page=REPOSITORIES_PER_PAGE,
        totals=counts,
    )
    stats = pulls.stats(pulls.Scope.REPOSITORY, repositories=[r.name for r in page.rows])
    for repository in page.rows:
        repository.pull_stats = stats.get(repository.name)
    return render(
        request,
        "registry_admin/repositories/list.html",
        {
            "form": form,
            "page": page,
            "counts": counts,
            "search_candidates": browse.SEARCH_CANDIDATES,
            "query_string": _query_without(request, "page", "after", "before"),
            **_index_status(),
        },
    )


def repository_detail(request, name):
    if not references.is_valid_repository(name):
        return _bad_name(request, name)
    repository = Repository.objects.filter(name=name).first()
    if repository is None:
        return _not_indexed(request, name)
    form = TagFilterForm(request.GET)
    filters = form.cleaned_data if form.is_valid() else {}
    page = browse.tag_page(
        repository,
        filters.get("sort") or "created",
        filters.get("q", ""),
        request.GET.get("page"),
        TAGS_PER_PAGE,
        show_referrers=bool(filters.get("referrers")),
    )
    return render(
        request,
        "registry_admin/repositories/detail.html",
        {
            "repository": repository,
            "form": form,
            "page": page,
            "query_string": _query_without(request, "page"),
            "storage_usage": usage.storage_summary_for_repository(name),
            **_quota_context(name),
            **_index_status(),
        },
    )


def _quota_context(name):
    quota = quotas.for_repository(name)
    return {
        "quota": quota,
        "quota_enforced": settings.REGISTRY_AUTH_MODE == "token",
        "quota_over_bytes": quota.usage_bytes - quota.limit_bytes + 1 if quota else 0,
    }


def tag_detail(request, name, tag):
    if not references.is_valid_repository(name) or not references.is_valid_tag(tag):
        return _bad_name(request, f"{name}:{tag}")
    indexed = Tag.objects.filter(repository__name=name, name=tag).select_related("manifest")
    return _image_page(request, name, tag, indexed.first())


def manifest_detail(request, name, digest):
    if not references.is_valid_repository(name) or not references.is_valid_digest(digest):
        return _bad_name(request, f"{name}@{digest}")
    return _image_page(request, name, digest, None)


def _image_page(request, name, reference, indexed_tag):
    """The detail page for `name:tag` or `name@digest`: live, else from the index."""
    live, error, missing = _read_live(name, reference)
    digest = live["digest"] if live else (indexed_tag.digest if indexed_tag else reference)
    manifest = None if live else Manifest.objects.filter(digest=digest).first()
    if live is None and (missing or error) and indexed_tag is None and manifest is None:
        status = 404 if missing else 503
        return render(
            request,
            "registry_admin/repositories/unavailable.html",
            {"name": name, "reference": reference, "error": error, "missing": missing},
            status=status,
        )
    host = settings.REGISTRY_PUBLIC_HOST or urlsplit(settings.REGISTRY_URL).netloc
    artifacts = _artifacts(name, digest)
    return render(
        request,
        "registry_admin/repositories/image.html",
        {
            "name": name,
            "reference": reference,
            "is_tag": references.is_valid_tag(reference),
            "digest": digest,
            "live": live,
            "image": live or _from_index(manifest),
            "indexed_tag": indexed_tag,
            "error": error,
            "missing": missing,
            "registry_host": host,
            "pullers": pulls.pullers(name, reference) if references.is_valid_tag(reference) else [],
            "digest_pulls": pulls.stats(pulls.Scope.DIGEST, name, [digest]).get(digest),
            "artifacts": artifacts,
            "artifacts_bytes": sum(a["size"] or 0 for a in artifacts),
            "subject": _subject(indexed_tag),
        },
    )


def _artifacts(name, digest):
    """The signatures, SBOMs and attestations the index knows are attached to `digest`."""
    repository = Repository.objects.filter(name=name).only("pk").first()
    if repository is None:
        return []
    artifacts = referrers.attached_artifacts(repository.pk, [digest]).get(digest, [])
    return referrers.add_pushers(name, artifacts)


def _subject(indexed_tag):
    """(kind label, subject digest) when the tag is a referrer, else None."""
    if indexed_tag is None or not indexed_tag.referrer_kind:
        return None
    label = referrers.KIND_LABELS.get(indexed_tag.referrer_kind, "referrers index")
    return label, indexed_tag.subject_digest


def _read_live(name, reference):
    """(image dict, error message, missing) from the registry."""
    try:
        image = image_details.read_live_image(name, reference)
    except registry.RegistryNotFound as exc:
        return None, str(exc), True
    except registry.RegistryError as exc:
        return None, str(exc), False
    live = {**image.details, "digest": image.digest, "raw": _pretty(image.raw)}
    return live, "", False


def _from_index(manifest):
    if manifest is None:
        return None
    return {
        field: getattr(manifest, field)
        for field in (
            "digest",
            "media_type",
            "manifest_size",
            "size",
            "created",
            "config_digest",
            "is_index",
            "platforms",
            "layer_count",
            "layers",
            "labels",
            "config",
            "details_fetched_at",
            "details_error",
        )
    }


def _pretty(raw):
    try:
        return json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _index_status():
    """The registry's (cached) state and the index's age, for the banner and the widget."""
    return {
        "registry_status": browse.registry_status(),
        "index_age": browse.index_age(),
        "sync_run": worker.latest_run(JobKind.SYNC),
        "sync_kind": JobKind.SYNC,
    }


def _query_without(request, *names):
    query = request.GET.copy()
    for name in names:
        query.pop(name, None)
    return query.urlencode()


def _bad_name(request, text):
    return render(
        request, "registry_admin/repositories/bad_name.html", {"text": text[:300]}, status=400
    )


def _not_indexed(request, name):
    return render(
        request,
        "registry_admin/repositories/unavailable.html",
        {"name": name, "not_indexed": True, **_index_status()},
        status=404,
    )
