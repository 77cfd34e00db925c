"""What the repository pages read from the index: repository lists with their sorts and
search, a repository's tags in version order, the header's totals, and the registry's status
line (its ping, cached, and when the index was last reconciled).

Reads only: the index is written by `registry_admin.index` (from notifications and portal
actions) and `registry_admin.reconcile`.
"""

import functools
import re
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.core.paginator import Paginator
from django.db.models import Count, F, Max, Q, Sum

from . import pulls, registry, worker
from .models import JobKind, Manifest, Repository, Tag

REPOSITORY_SORTS = {
    "name": ("Name", [F("name").asc()]),
    "push": ("Last push", [F("last_push_at").desc(nulls_last=True), F("name").asc()]),
    "size": ("Size", [F("total_size").desc(), F("name").asc()]),
    "tags": ("Tag count", [F("tag_count").desc(), F("name").asc()]),
    "pulled": ("Last pull", [F("last_pulled_at").desc(nulls_last=True), F("name").asc()]),
}
TAG_SORTS = {
    "created": "Created (newest first)",
    "name": "Name (versions ascending)",
    "-name": "Name (versions descending)",
    "size": "Size (largest first)",
    "pushed": "Last pushed (newest first)",
    "pulled": "Last pulled (newest first)",
    "pulls": "Pulls in 30 days (most first)",
}
MAX_FILTER_LENGTH = 255


def search_repositories(query="", sort="name", show_empty=False):
    """Repositories whose name contains `query`, in the named sort order (a QuerySet)."""
    repositories = Repository.objects.all()
    if not show_empty:
        repositories = repositories.filter(is_empty=False)
    if query:
        # Names are lowercase by the registry's grammar: lowering the query is a case-insensitive
        # match that SQLite and PostgreSQL both answer with a plain LIKE.
        repositories = repositories.filter(name__contains=query.lower())
    if sort == "pulled":
        repositories = repositories.annotate(last_pulled_at=pulls.last_pull_subquery())
    return repositories.order_by(*REPOSITORY_SORTS.get(sort, REPOSITORY_SORTS["name"])[1])


def index_counts():
    """Totals for the repositories page header."""
    totals = Repository.objects.aggregate(
        repositories=Count("id", filter=Q(is_empty=False)),
        empty=Count("id", filter=Q(is_empty=True)),
        tags=Sum("tag_count"),
    )
    totals["tags"] = totals["tags"] or 0
    return totals


_DIGITS = re.compile(r"(\d+)")
_SEMVER = re.compile(r"[vV]?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:[-_.]?([0-9A-Za-z][0-9A-Za-z.-]*))?")


@functools.lru_cache(maxsize=50_000)
def natural_key(text):
    """`v1.10` after `v1.9`: digit runs compare as numbers (comparable tuples throughout)."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part.lower())
        for part in _DIGITS.split(text)
        if part
    )


@functools.lru_cache(maxsize=50_000)
def tag_name_key(name):
    """Versions first in semver order (1.0.0-rc.1 < 1.0.0 < 1.0.1 < 1.10.0), then other names
    in natural order."""
    match = _SEMVER.fullmatch(name)
    if match:
        major, minor, patch, pre = match.groups()
        release = (int(major), int(minor or 0), int(patch or 0))
        pre_key = (0, natural_key(pre)) if pre else (1, ())
        return (0, release, pre_key, natural_key(name))
    return (1, (), (), natural_key(name))


@dataclass
class TagRow:
    """One tag as the repository page lists it: the Tag (manifest loaded, without the bulky
    layers/config JSON), the other tags on its digest, and its digest group for shading."""

    tag: Tag
    manifest: Manifest | None
    siblings: list
    group: int
    # pulls.PullStats of the tag (None: never pulled since the portal watched).
    pull_stats: object = None

    @property
    def shared(self):
        return bool(self.siblings)


# What each sort needs besides (pk, name, digest): one column, so the listing query converts
# as few values as possible. The digest breaks ties, keeping tags of one image adjacent.
_SORT_COLUMNS = {
    "created": "manifest__created",
    "pushed": "pushed_at",
    "size": "manifest__size",
    "name": None,
    "-name": None,
    # From the pull counters, not a Tag column (see tag_page).
    "pulled": None,
    "pulls": None,
}


def tag_page(repository, sort="created", query="", page_number=1, per_page=100):
    """One page (a Django Page of TagRows) of the repository's tags, filtered by substring and
    sorted. Sorting runs in Python over plain tuples (semver order has no SQL form); only the
    page's rows become model instances."""
    sort = sort if sort in _SORT_COLUMNS else "created"
    columns = ["pk", "name", "digest"] + ([_SORT_COLUMNS[sort]] if _SORT_COLUMNS[sort] else [])
    keys = list(Tag.objects.filter(repository=repository).values_list(*columns))
    stats = pulls.stats(pulls.Scope.TAG, repository.name)
    if sort == "pulled":
        keys = [(*key, getattr(stats.get(key[1]), "last_pulled_at", None)) for key in keys]
    elif sort == "pulls":
        keys = [(*key, getattr(stats.get(key[1]), "recent_pulls", 0)) for key in keys]
    by_digest = {}
    for _, name, digest, *_ in keys:
        by_digest.setdefault(digest, []).append(name)
    if query:
        needle = query.lower()
        keys = [key for key in keys if needle in key[1].lower()]
    keys.sort(key=_tag_sorter(sort), reverse=sort == "-name")
    page = Paginator(keys, per_page).get_page(page_number)
    loaded = Tag.objects.select_related("manifest").defer(
        "manifest__layers", "manifest__config", "manifest__labels"
    )
    tags = loaded.in_bulk([key[0] for key in page.object_list])
    groups, rows = {}, []
    for pk, name, digest, *_ in page.object_list:
        tag = tags.get(pk)
        if tag is None:  # deleted since the listing query
            continue
        siblings = sorted((n for n in by_digest[digest] if n != name), key=tag_name_key)
        group = groups.setdefault(digest, len(groups)) if siblings else -1
        rows.append(
            TagRow(
                tag=tag,
                manifest=tag.manifest,
                siblings=siblings,
                group=group,
                pull_stats=stats.get(name),
            )
        )
    page.object_list = rows
    return page


def _tag_sorter(sort):
    if sort in ("name", "-name"):
        return lambda key: tag_name_key(key[1])
    if sort in ("size", "pulls"):
        return lambda key: (-(key[3] or 0), key[2], natural_key(key[1]))
    return lambda key: (-_timestamp(key[3]), key[2], natural_key(key[1]))


def _timestamp(value):
    return value.timestamp() if value else float("-inf")


def registry_status(ttl=30):
    """The registry's ping (PingResult), cached for `ttl` seconds per process so page views do
    not each wait for a down registry."""
    key = "oyster:registry-ping:" + settings.REGISTRY_URL
    status = cache.get(key)
    if status is None:
        status = registry.get_client().ping()
        cache.set(key, status, ttl)
    return status


def index_age():
    """When the index was last reconciled (None: never): the last successful sync run, or the
    newest repository reconcile (a run's record may have been pruned)."""
    run = worker.last_finished_run(JobKind.SYNC)
    if run is not None:
        return run.finished_at
    return Repository.objects.aggregate(newest=Max("synced_at"))["newest"]
