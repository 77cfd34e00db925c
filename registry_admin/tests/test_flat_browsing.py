"""The repository list at any size (issue #34): cursor pages, kept header totals, the trigram
name search and the kept last-pull column give the same repositories, in the same order, with
the same totals as the whole-table queries they replace (kept here as the oracle)."""

import base64
import json
import re
import sqlite3
import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from registry_admin import browse, index, pulls
from registry_admin.models import Manifest, PullCount, Repository
from registry_admin.models.pulls import last_pull_subquery
from registry_admin.views import repositories as repository_views

from .harness import free_port

pytestmark = pytest.mark.django_db

ORACLE_ORDER = {
    "name": [F("name").asc()],
    "push": [F("last_push_at").desc(nulls_last=True), F("name").asc()],
    "size": [F("total_size").desc(), F("name").asc()],
    "tags": [F("tag_count").desc(), F("name").asc()],
    "pulled": [F("last_pulled").desc(nulls_last=True), F("name").asc()],
}


def oracle(query="", sort="name", show_empty=False):
    """The list as the page built it before #34: whole-table filter, subquery and sort."""
    rows = Repository.objects.annotate(last_pulled=last_pull_subquery())
    if not show_empty:
        rows = rows.filter(is_empty=False)
    if query:
        rows = rows.filter(name__contains=query.lower())
    return list(rows.order_by(*ORACLE_ORDER[sort]).values_list("name", flat=True))


def oracle_totals():
    totals = Repository.objects.aggregate(
        repositories=Count("id", filter=Q(is_empty=False)),
        empty=Count("id", filter=Q(is_empty=True)),
        tags=Sum("tag_count"),
    )
    return {**totals, "tags": totals["tags"] or 0}


def _digest(n):
    return f"sha256:{n:064x}"


def _pull(repository, when, actor="bob"):
    key = (PullCount.Scope.REPOSITORY, repository, "", actor, when.date())
    pulls.add({key: [1, when]})


@pytest.fixture
def seeded(django_capture_on_commit_callbacks):
    """Ties on every sort, missing push and pull times, empty repositories, and names with the
    characters LIKE treats specially."""
    now = timezone.now().replace(microsecond=0)
    same_time = now - timedelta(hours=3)
    names = [
        "alpha/app",
        "alpha/app2",
        "beta/tool",
        "beta_x/tool",
        "beta-x/tool",
        "gamma",
        "a%b/odd",
        "a_b/odd",
        "team/app",
        "team/api",
        "team/web",
        "zeta/app",
    ]
    with django_capture_on_commit_callbacks(execute=True):
        for number, name in enumerate(names):
            # Three sizes and two push times only: long runs of ties on size and last push.
            pushed = same_time if number % 2 else now - timedelta(hours=number)
            index.upsert_tag(name, "v1", _digest(number % 3 + 1), pushed)
            if number % 4 == 0:
                index.upsert_tag(name, "v2", _digest(number % 3 + 1), pushed)
            if number % 3 == 0:
                _pull(name, now - timedelta(minutes=5))  # ties on the last pull too
            elif number % 3 == 1:
                _pull(name, now - timedelta(days=number))
        # Known from a reconcile only: no push time.
        index.upsert_tag("nopush/app", "v1", _digest(1), None)
        index.upsert_tag("nopush/zz", "v1", _digest(2), None)
        for name in ("ghost/one", "ghost/two", "team/gone"):
            index.upsert_tag(name, "v1", _digest(1), now)
            index.forget_tags(name, ["v1"])
        # Pulled, then emptied: an empty repository with a last pull.
        _pull("ghost/one", now - timedelta(days=2))
    # Sizes as a details fetch would leave them (bare manifests have none).
    Manifest.objects.filter(digest=_digest(1)).update(size=1000)
    Manifest.objects.filter(digest=_digest(2)).update(size=1000)
    Manifest.objects.filter(digest=_digest(3)).update(size=7)
    index.refresh_stats_of(Repository.objects.values_list("pk", flat=True))
    return now


def walk_forward(query, sort, show_empty, per_page):
    names, after, pages = [], None, 0
    while True:
        page = browse.repository_page(query, sort, show_empty, after=after, per_page=per_page)
        names += [row.name for row in page.rows]
        pages += 1
        assert pages < 100, "the pages never end"
        if not page.has_next:
            return names, page
        after = page.next_cursor


def walk_backward(query, sort, show_empty, per_page):
    page = browse.repository_page(query, sort, show_empty, last=True, per_page=per_page)
    names = [row.name for row in page.rows]
    while page.has_previous:
        page = browse.repository_page(
            query, sort, show_empty, before=page.previous_cursor, per_page=per_page
        )
        names = [row.name for row in page.rows] + names
        assert len(names) < 1000
    return names


# "uſh": SQLite's trigram index folds the long s to "s" and finds "nopush/…"; a name that
# does not contain the text must not be listed.
QUERIES = ["", "a", "_", "%", "app", "a_b", "a%b", "pp/", "team/app", "zzz", "TEAM", "ta/", "uſh"]


@pytest.mark.parametrize("sort", list(browse.REPOSITORY_SORTS))
@pytest.mark.parametrize("show_empty", [False, True])
def test_pages_walked_both_ways_equal_the_whole_table_query(seeded, sort, show_empty):
    for query in QUERIES:
        expected = oracle(query, sort, show_empty)
        for per_page in (1, 2, 5, 50):
            forward, first_page = walk_forward(query, sort, show_empty, per_page)
            assert forward == expected, (query, per_page)
            assert walk_backward(query, sort, show_empty, per_page) == expected, (query, per_page)
        page = browse.repository_page(query, sort, show_empty, per_page=50)
        assert page.matches == len(expected), query


def test_common_searches_walk_the_sort_index_and_say_more_than(seeded, monkeypatch):
    """Past SEARCH_CANDIDATES matches the search walks the index and filters; same rows."""
    monkeypatch.setattr(browse, "SEARCH_CANDIDATES", 2)
    for sort in browse.REPOSITORY_SORTS:
        for query in ("a", "app", "team", "/"):
            expected = oracle(query, sort)
            assert len(expected) > 2
            forward, page = walk_forward(query, sort, False, 2)
            assert forward == expected
            assert walk_backward(query, sort, False, 2) == expected
            assert page.matches is None
        assert walk_forward("team/web", sort, False, 2)[0] == ["team/web"]


@pytest.fixture
def late(seeded, django_capture_on_commit_callbacks):
    """Many matches of `zz/late-`, all last in name order, with ties on every sort (two sizes,
    one push time, one pull time, some never pulled) and an empty one among them."""
    pushed = seeded - timedelta(hours=1)
    with django_capture_on_commit_callbacks(execute=True):
        for number in range(14):
            name = f"zz/late-{number:02d}"
            index.upsert_tag(name, "v1", _digest(number % 2 + 1), pushed)
            if number % 5 == 0:
                index.upsert_tag(name, "v2", _digest(number % 2 + 1), pushed)
            if number % 3:
                _pull(name, seeded - timedelta(minutes=7))
        index.upsert_tag("zz/late-gone", "v1", _digest(1), pushed)
        index.forget_tags("zz/late-gone", ["v1"])
    index.refresh_stats_of(Repository.objects.values_list("pk", flat=True))
    return seeded


LATE_QUERIES = ["zz/late-", "late", "te-0", "app", "eta", "/la"]


@pytest.mark.parametrize("sort", list(browse.REPOSITORY_SORTS))
@pytest.mark.parametrize("show_empty", [False, True])
@pytest.mark.parametrize(
    "walk, candidates, estimate",
    [
        (1, 1000, None),  # the short walk gives up at once: the database sorts the matches
        (3, 1000, None),  # some ranges walked within the budget, then the sorted matches
        (1, 3, 0),  # more matches than the sorted path takes: the whole walk after all
        (1, 1000, 10**6),  # estimated too many to sort: the whole walk
    ],
)
def test_searches_with_many_late_matches_equal_the_whole_table_query(
    late, monkeypatch, sort, show_empty, walk, candidates, estimate
):
    """Past SEARCH_CANDIDATES, whichever way the page is found (a short walk, the name index's
    matches sorted by the database, the whole walk), the same rows in the same order. (In name
    order the name range, the tail index and the trigram lists come first: their own tests
    below; left out here.)"""
    monkeypatch.setattr(browse, "SEARCH_CANDIDATES", 2)
    monkeypatch.setattr(browse, "_prefix_page", lambda *args: None)
    monkeypatch.setattr(browse, "_trigram_page", lambda *args: None)
    monkeypatch.setattr(browse, "LATE_WALK", walk)
    monkeypatch.setattr(browse, "LATE_CANDIDATES", candidates)
    if estimate is not None:
        monkeypatch.setattr(browse, "_estimate", lambda found: estimate)
    sorted_calls = []
    sorted_matches = browse._sorted_matches

    def spy(*args, **kwargs):
        sorted_calls.append(args)
        return sorted_matches(*args, **kwargs)

    monkeypatch.setattr(browse, "_sorted_matches", spy)
    for query in LATE_QUERIES:
        expected = oracle(query, sort, show_empty)
        assert len(expected) > 2, query
        for per_page in (1, 2, 5):
            forward, page = walk_forward(query, sort, show_empty, per_page)
            assert forward == expected, (query, per_page)
            assert page.matches is None
            assert walk_backward(query, sort, show_empty, per_page) == expected, (query, per_page)
    if estimate is None:
        assert sorted_calls  # the sorted path was taken (and its rows checked above)
    elif estimate > candidates:
        assert not sorted_calls


def test_the_late_search_reads_the_page_rows_whole(late, monkeypatch):
    """The keys-only paths return full rows: cursors and the page's columns as the plain list."""
    monkeypatch.setattr(browse, "SEARCH_CANDIDATES", 2)
    monkeypatch.setattr(browse, "LATE_WALK", 1)
    page = browse.repository_page("zz/late-", "size", per_page=3)
    plain = list(Repository.objects.filter(name__in=[r.name for r in page.rows]))
    assert {r.name: (r.total_size, r.tag_count, r.last_push_at) for r in page.rows} == {
        r.name: (r.total_size, r.tag_count, r.last_push_at) for r in plain
    }
    rest = browse.repository_page("zz/late-", "size", after=page.next_cursor, per_page=50)
    assert [r.name for r in page.rows + rest.rows] == oracle("zz/late-", "size")


@pytest.fixture
def elsewhere(late, django_capture_on_commit_callbacks):
    """Besides the names starting with `zz/late-` (and `a_b`, `a%b`): names holding them further
    on, before and after them in name order, an empty one, one holding it twice, and names a
    LIKE wildcard would wrongly take."""
    with django_capture_on_commit_callbacks(execute=True):
        for number, name in enumerate(
            [
                "ab/zz/late-in",
                "zzz/zz/late-after",
                "zz/late-zz/late-twice",
                "q/a_b/odd",
                "q/a%b/odd",
                "a_b/odd2",
                "a%b/odd2",
                "axb/odd",
                "q/axb/odd",
                "zz/late_/odd",
            ]
        ):
            index.upsert_tag(name, "v1", _digest(number % 3 + 1), late)
        index.upsert_tag("m/zz/late-gone", "v1", _digest(1), late)
        index.forget_tags("m/zz/late-gone", ["v1"])
    index.refresh_stats_of(Repository.objects.values_list("pk", flat=True))
    return late


PREFIX_QUERIES = [
    "zz/late-",
    "zz/late",
    "zz/",
    "late-0",
    "a_b",
    "a%b",
    "a_b/",
    "te-",
    "zzz",
    "beta",
]


@pytest.mark.parametrize("show_empty", [False, True])
@pytest.mark.parametrize("tail_candidates", [1000, 3, 0])
def test_searches_starting_many_names_page_their_name_range_and_the_tail_index(
    elsewhere, monkeypatch, show_empty, tail_candidates
):
    """In name order, a search is the names starting with it (a range of the name index)
    merged with the names holding it after their first character (the tail index, when it has
    few enough): the same rows as the whole-table query, both ways, at every page size; with
    too many of the latter, the other ways as before."""
    monkeypatch.setattr(browse, "SEARCH_CANDIDATES", 2)
    monkeypatch.setattr(browse, "TAIL_CANDIDATES", tail_candidates)
    served = _name_order_pages_match(monkeypatch, "_prefix_page", PREFIX_QUERIES, show_empty)
    if tail_candidates == 1000:
        # "zz/late-" starts 15 names and is held further on by 4 (one empty, one twice).
        assert {"zz/late-", "a_b", "a%b"} <= served
        assert "late-0" not in served  # no name starts with it: the other ways
    elif tail_candidates == 3:
        assert "zz/late-" not in served and "a_b" in served
    else:
        assert "zz/late-" not in served and "beta" in served  # held nowhere else


def test_names_out_of_code_point_order_are_not_paged_by_range(elsewhere, monkeypatch):
    """A PostgreSQL collation other than "C" orders names its own way: the other ways then."""
    monkeypatch.setattr(browse, "SEARCH_CANDIDATES", 2)
    monkeypatch.setattr(browse, "_code_point_order", lambda: False)
    monkeypatch.setattr(browse, "_tail_matches", lambda query: pytest.fail("asked the tail"))
    assert walk_forward("zz/late-", "name", False, 2)[0] == oracle("zz/late-")


def test_the_database_orders_names_by_code_point():
    """The test databases (SQLite; PostgreSQL initialised in C.UTF-8) take the range path;
    Python's order of the names is then the database's."""
    browse._code_point_order_cache.clear()
    assert browse._code_point_order()
    names = ["a", "a/b", "a-b", "a_b", "a%b", "aB", "a\u00e9", "a\U0001f600", "b", "a0", "a.b"]
    for name in names:
        Repository.objects.create(name=name)
    assert list(Repository.objects.order_by("name").values_list("name", flat=True)) == sorted(names)


def test_the_prefix_range_holds_exactly_the_names_starting_with_the_text():
    assert browse._prefix_end("team-9/") == "team-90"
    assert browse._prefix_end("a%") == "a&"
    assert browse._prefix_end("x\U0010ffff") is None
    assert browse._prefix_end("x\ud7ff") is None


def test_the_tail_index_follows_repositories_that_come_and_go(seeded):
    gamma = Repository.objects.get(name="gamma").pk
    assert browse._tail_matches("amm") == [gamma]
    assert browse._tail_matches("gam") == []  # at the start only
    Repository.objects.filter(name="gamma").delete()
    assert browse._tail_matches("amm") == []
    index.upsert_tag("gamma", "v9", _digest(1), timezone.now())
    assert browse._tail_matches("amm") == [Repository.objects.get(name="gamma").pk]


@pytest.mark.parametrize("sort", list(browse.REPOSITORY_SORTS))
def test_searches_through_a_selective_part_of_the_query_equal_the_whole_table_query(
    late, monkeypatch, sort
):
    """PostgreSQL asks its trigram index for the query's rarest part (as its name sample
    says), then checks the whole query: the same rows, for the probe and the sorted path."""
    names = list(Repository.objects.order_by("name").values_list("name", flat=True))
    monkeypatch.setattr(browse, "_name_sample", lambda: names)
    for candidates in (1000, 2):
        monkeypatch.setattr(browse, "SEARCH_CANDIDATES", candidates)
        monkeypatch.setattr(browse, "LATE_WALK", 1)
        for query in LATE_QUERIES + ["team/app", "a%b", "pp/", "eam/a"]:
            expected = oracle(query, sort)
            forward, page = walk_forward(query, sort, False, 2)
            assert forward == expected, (query, candidates)
            assert walk_backward(query, sort, False, 2) == expected, (query, candidates)
            if candidates == 1000:
                assert page.matches == len(expected)


def test_the_selective_part_is_a_part_of_the_query_with_fewer_common_trigrams():
    sample = [f"team-{n % 50}/service-{n:07d}" for n in range(0, 1_000_000, 9901)]
    assert browse._selective_part("team-1/", sample) in ("m-1/", "-1/")
    assert browse._selective_part("service-0000421", sample) in ("00421", "0421", "000421")
    assert browse._selective_part("abc", []) == "abc"  # no sample: the whole query
    assert browse._selective_part("a/b", sample) == "a/b"  # no trigram in any part


@pytest.mark.postgres  # pg_trgm: run by `make test-postgres`
def test_the_trigrams_are_pg_trgm_s(seeded):
    # ASCII, as repository names are (pg_trgm's idea of a letter beyond it depends on the
    # database's locale; the model only chooses the part asked of the index).
    with connection.cursor() as cursor:
        for name in oracle(show_empty=True) + ["Ab-cd_ef/9", "x", "a.b__c--d"]:
            cursor.execute("SELECT show_trgm(%s)", [name])
            assert browse._trigrams(name) == set(cursor.fetchone()[0]), name


def test_header_totals_follow_every_kind_of_change(seeded, django_capture_on_commit_callbacks):
    assert browse.header_totals() == oracle_totals()
    now = timezone.now()
    index.upsert_tag("brand/new", "v1", _digest(1), now)
    index.upsert_tag("brand/new", "v2", _digest(2), now)
    index.forget_tags("alpha/app", ["v1", "v2"])
    index.forget_digest("team/api", _digest(1 % 3 + 1))
    Repository.objects.filter(name="beta/tool").delete()  # cascades its tags
    Repository.objects.filter(name__startswith="ghost/").update(is_empty=False)
    Repository.objects.bulk_create([Repository(name="bulk/one"), Repository(name="bulk/two")])
    index.refresh_stats_of(Repository.objects.values_list("pk", flat=True))
    assert browse.header_totals() == oracle_totals()
    Repository.objects.all().delete()
    assert browse.header_totals() == {"repositories": 0, "empty": 0, "tags": 0}


def test_totals_fold_into_one_row_and_stay_exact(seeded, monkeypatch):
    monkeypatch.setattr(browse, "TOTALS_FOLD_AT", 3)
    expected = oracle_totals()
    assert _delta_rows() > 3
    assert browse.header_totals() == expected  # read, then folded
    assert _delta_rows() == 0  # all in the folded row
    index.upsert_tag("after/fold", "v1", _digest(1), timezone.now())
    assert browse.header_totals() == oracle_totals() != expected


def _delta_rows():
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM registry_admin_repositorytotals")
        return cursor.fetchone()[0]


def test_the_name_index_follows_repositories_that_come_and_go(seeded):
    assert [r.name for r in browse.repository_page("gamma").rows] == ["gamma"]
    Repository.objects.filter(name="gamma").delete()
    assert browse.repository_page("gamma").rows == []
    index.upsert_tag("gamma", "v9", _digest(1), timezone.now())
    assert [r.name for r in browse.repository_page("amm").rows] == ["gamma"]


def test_last_pull_is_kept_from_the_counters(seeded, django_capture_on_commit_callbacks):
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        _pull("zeta/app", now)
    assert Repository.objects.get(name="zeta/app").last_pulled_at == now
    assert oracle(sort="pulled")[0] == "zeta/app"
    assert walk_forward("", "pulled", False, 3)[0] == oracle(sort="pulled")

    # A repository deleted, then pushed again, shows the last pull its counters hold.
    Repository.objects.filter(name="zeta/app").delete()
    index.upsert_tag("zeta/app", "v1", _digest(1), now)
    assert Repository.objects.get(name="zeta/app").last_pulled_at == now

    # A rebuild recomputes the column with the counters.
    Repository.objects.update(last_pulled_at=None)
    with django_capture_on_commit_callbacks(execute=True):
        pulls.refresh_last_pulls()
    assert walk_forward("", "pulled", True, 4)[0] == oracle(sort="pulled", show_empty=True)


def _cursor(payload):
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.fixture
def registry_down(settings):
    settings.REGISTRY_URL = f"http://127.0.0.1:{free_port()}"
    settings.REGISTRY_TIMEOUT = 1
    cache.clear()


def _names(response):
    return re.findall(r'class="mono">([^<]+)</a>', response.content.decode())


def test_the_page_links_walk_the_list(seeded, viewer_client, registry_down, monkeypatch):
    expected = oracle(sort="tags")
    response = viewer_client.get("/repositories/?sort=tags")
    shown = _names(response)
    assert shown == expected[:50]
    assert f"{len(expected)} repositories".encode() in response.content
    assert b'rel="next"' not in response.content  # one page
    monkeypatch.setattr(repository_views, "REPOSITORIES_PER_PAGE", 4)
    names, path = [], "/repositories/?sort=tags&q=a"
    while path:
        response = viewer_client.get(path)
        assert response.status_code == 200
        names += _names(response)
        link = re.search(r'href="\?([^"]+)" rel="next"', response.content.decode())
        path = "/repositories/?" + link.group(1).replace("&amp;", "&") if link else None
    assert names == oracle("a", "tags")
    last = viewer_client.get("/repositories/?sort=tags&q=a&page=last")
    assert _names(last) == oracle("a", "tags")[-4:]
    assert b'rel="prev"' in last.content and b'rel="next"' not in last.content


@pytest.mark.parametrize(
    "link",
    [
        "after=%%%",
        "after=" + "A" * 700,
        "after=bm90IGpzb24",  # "not json"
        "before=" + _cursor(["size", 5, "team/app"]),  # made for another sort
        "after=" + _cursor(["name", None]),
        "after=" + _cursor(["name", 3, "team/app"]),
        "after=" + _cursor(["name", None, 7]),
        "after=" + _cursor(["name", None, "x" * 300]),
        "after=" + _cursor({"sort": "name"}),
        "sort=size&after=" + _cursor(["size", 2**70, "a"]),
        "sort=size&after=" + _cursor(["size", -1, "a"]),
        "sort=size&after=" + _cursor(["size", "12", "a"]),
        "sort=size&after=" + _cursor(["size", True, "a"]),
        "sort=size&after=" + _cursor(["size", None, "a"]),
        "sort=push&after=" + _cursor(["push", "2020-01-01T00:00:00", "a"]),  # no zone
        "sort=push&after=" + _cursor(["push", "yesterday", "a"]),
        "sort=push&after=" + _cursor(["push", "9" * 50, "a"]),
        "page=2",
        "page=-1",
        "page=" + "9" * 20,
    ],
)
def test_bad_page_links_say_so_and_show_the_first_page(seeded, viewer_client, registry_down, link):
    sort = re.match(r"sort=(\w+)", link)
    response = viewer_client.get("/repositories/?" + link)
    assert response.status_code == 200
    assert b'class="notice notice-warning" role="alert"' in response.content
    assert _names(response) == oracle(sort=sort.group(1) if sort else "name")[:50]


def test_a_cursor_from_a_deleted_repository_still_continues(seeded):
    first = browse.repository_page(sort="size", per_page=3)
    boundary = first.rows[-1].name
    Repository.objects.filter(name=boundary).delete()
    rest = browse.repository_page(sort="size", after=first.next_cursor, per_page=50)
    expected = oracle(sort="size")
    assert [row.name for row in first.rows[:2]] + [row.name for row in rest.rows] == expected


def test_the_header_and_counts_are_exact_with_thousands_separators(
    viewer_client, registry_down, django_capture_on_commit_callbacks
):
    Repository.objects.bulk_create(
        [Repository(name=f"bulk/r{n:04d}", is_empty=False, tag_count=2) for n in range(1203)]
    )
    response = viewer_client.get("/repositories/")
    assert b'data-count="repositories">1,203<' in response.content
    assert b'data-count="tags">2,406<' in response.content
    assert b"1,203 repositories, 50 on this page." in response.content


def _hold_writes():
    """Another connection holding the repository table the way a writer does: SQLite's write
    lock (an IMMEDIATE transaction), PostgreSQL's EXCLUSIVE table lock (writes wait, reads
    not). Returns the function that lets go."""
    if connection.vendor == "sqlite":
        writer = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
    else:
        import psycopg

        writer = psycopg.connect(**connection.get_connection_params())
        writer.execute("LOCK TABLE registry_admin_repository IN EXCLUSIVE MODE")

    def release():
        writer.rollback() if connection.vendor != "sqlite" else writer.execute("ROLLBACK")
        writer.close()

    return release


@pytest.mark.django_db(transaction=True)
def test_a_common_search_does_not_wait_for_a_writer(monkeypatch):
    """The bounded walk reads outside any transaction: with the worker holding the write lock,
    the page comes at once instead of after the lock timeout (SQLite's transactions are
    IMMEDIATE: one of its own would wait for the lock)."""
    for number in range(6):
        Repository.objects.create(name=f"lock/app-{number}", is_empty=False)
    monkeypatch.setattr(browse, "SEARCH_CANDIDATES", 2)
    monkeypatch.setattr(browse, "_estimate", lambda found: 3)
    expected = oracle("lock/", "size")[:2]
    release = _hold_writes()
    try:
        started = time.monotonic()
        page = browse.repository_page("lock/", "size", per_page=2)
        # Half SQLite's busy timeout (20 s): waiting for the lock would take all of it.
        assert time.monotonic() - started < 10
    finally:
        release()
    assert [row.name for row in page.rows] == expected


def test_the_tail_index_is_asked_for_the_rarest_part_of_the_tails():
    """Bench-like names: the tails of `team-9/…` names all hold `m-9/` (2 %), and none holds
    `tea`; the tail lookup asks for a part with `tea`, not for `m-9/` (which would read every
    name of team 9 to find none)."""
    tails = [f"team-{i % 50}/service-{i:07d}"[1:] for i in range(0, 100_000, 997)]
    assert browse._selective_part("team-9/", tails) == "m-9/"  # independent trigrams
    assert "tea" in browse._selective_part("team-9/", tails, joint=min)


def test_a_walk_within_its_budget_is_never_stopped(late, monkeypatch):
    """The same search, again and again: its bounded walk fits its budget every time (SQLite
    counts a cached statement's steps across its runs; the budget is this run's alone)."""
    monkeypatch.setattr(browse, "SEARCH_CANDIDATES", 2)
    monkeypatch.setattr(browse, "LATE_WALK", 1000)
    monkeypatch.setattr(browse, "PROGRESS_STEPS", 50)
    monkeypatch.setattr(browse, "_estimate", lambda found: 3)
    monkeypatch.setattr(browse, "_sorted_matches", lambda *args: pytest.fail("out of budget"))
    expected = oracle("zz/late-", "size")[:2]
    for _ in range(60):
        page = browse.repository_page("zz/late-", "size", per_page=2)
        assert [row.name for row in page.rows] == expected


@pytest.fixture
def trigrams(elsewhere, django_capture_on_commit_callbacks):
    """Besides `elsewhere`'s names: names with `.`, trigrams repeated in one name (`aaaa`),
    empty ones among them, and names shorter than some queries."""
    with django_capture_on_commit_callbacks(execute=True):
        for number, name in enumerate(
            ["aaaa", "b/aaaaaa", "caaab", "x.y/a.b", "x.y/z", "xxy/a", "aa", "q/aaaa.b"]
        ):
            index.upsert_tag(name, "v1", _digest(number % 3 + 1), elsewhere)
        for name in ("m/aaaa", "x.y/gone"):
            index.upsert_tag(name, "v1", _digest(1), elsewhere)
            index.forget_tags(name, ["v1"])
    index.refresh_stats_of(Repository.objects.values_list("pk", flat=True))
    return elsewhere


TRIGRAM_QUERIES = [
    "late-0",
    "te-",
    "/la",
    "ate-1",
    "app",
    "a_b",
    "a%b",
    "b/o",
    "x.y",
    ".y/",
    "aaa",
    "aaaa",
    "aaaaa",
    "a.b",
    "zz/late-zz/late-twice-and-longer-than-any-name",
    "qqq",
]


def stored_trigrams():
    with connection.cursor() as cursor:
        cursor.execute("SELECT trigram, name FROM registry_admin_repository_trigram")
        return set(cursor.fetchall())


def expected_trigrams():
    return {
        (name[i : i + 3], name)
        for name in Repository.objects.values_list("name", flat=True)
        for i in range(len(name) - 2)
    }


@pytest.mark.parametrize("show_empty", [False, True])
@pytest.mark.parametrize(
    "windows, budget",
    [
        ((64, 256, 1024, 4096), 24_000),  # as shipped: every list ends within the first window
        ((1, 2, 3), 10**6),  # many short rounds, the lists read a few names at a time
        ((1,), 3),  # out of budget at once: the other ways
    ],
)
def test_searches_no_name_starts_page_the_trigram_lists(
    trigrams, monkeypatch, show_empty, windows, budget
):
    """In name order, a common search no name starts (`late-0`) is read from its trigrams'
    name lists (migration 0027): the same rows as the whole-table query, both ways (cursors,
    the last page), at every page size, with repeated trigrams, wildcards, `.`, empty
    repositories shown and hidden, and a query longer than any name."""
    monkeypatch.setattr(browse, "SEARCH_CANDIDATES", 2)
    monkeypatch.setattr(browse, "TRIGRAM_WINDOWS", windows)
    monkeypatch.setattr(browse, "TRIGRAM_BUDGET", budget)
    monkeypatch.setattr(browse, "_prefix_page", lambda *args: None)
    served = _name_order_pages_match(monkeypatch, "_trigram_page", TRIGRAM_QUERIES, show_empty)
    if budget > 3:
        assert {"late-0", "aaaa", "a%b", "a_b"} <= served
    else:
        assert not served


def test_a_common_search_no_name_starts_reads_one_window_of_a_list(trigrams, monkeypatch):
    """`e-1` holds `ate-1`'s most telling trigram: the page comes from the first window of the
    lists, without walking the name index to the first match."""
    monkeypatch.setattr(browse, "SEARCH_CANDIDATES", 2)
    monkeypatch.setattr(browse, "_walk", lambda *args, **kwargs: pytest.fail("walked"))
    monkeypatch.setattr(browse, "_sorted_matches", lambda *args: pytest.fail("sorted"))
    page = browse.repository_page("ate-1", per_page=2)
    assert [row.name for row in page.rows] == oracle("ate-1")[:2]
    assert page.matches is None and page.has_next


def test_names_out_of_code_point_order_are_not_paged_by_trigram_lists(trigrams, monkeypatch):
    monkeypatch.setattr(browse, "_code_point_order", lambda: False)
    assert browse._trigram_page(Repository.objects.all(), None, 3, False, "late-0") is None


def test_the_trigram_lists_follow_repositories_that_come_and_go(trigrams):
    """Migration 0027's triggers: a repository added, renamed, deleted (repeated trigrams,
    `aaaa`, counted once)."""
    assert stored_trigrams() == expected_trigrams()
    assert ("aaa", "aaaa") in stored_trigrams()
    Repository.objects.create(name="new/aaaaz")
    assert ("aaz", "new/aaaaz") in stored_trigrams()
    Repository.objects.filter(name="new/aaaaz").update(name="new/renamed")
    Repository.objects.filter(name="gamma").update(tag_count=9)  # not the name: no change
    assert stored_trigrams() == expected_trigrams()
    Repository.objects.filter(name__in=["aaaa", "new/renamed", "zz/late-03"]).delete()
    assert stored_trigrams() == expected_trigrams()
    assert not {row for row in stored_trigrams() if row[1] == "aaaa"}


@pytest.mark.postgres  # TRUNCATE's statement trigger: PostgreSQL only
def test_a_truncate_empties_the_trigram_lists(trigrams):
    with connection.cursor() as cursor:
        # The fixture's deferred foreign key checks first: TRUNCATE refuses pending ones.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("TRUNCATE registry_admin_repository CASCADE")
    assert stored_trigrams() == set()


@pytest.mark.django_db(transaction=True)
def test_the_upgrade_fills_the_trigram_lists_from_the_existing_names():
    """Migration 0027 backfills the lists from the repositories already indexed."""
    before = [("registry_admin", "0026_repository_name_tail")]
    after = [("registry_admin", "0027_repository_name_trigrams")]
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    try:
        executor = MigrationExecutor(connection)
        executor.migrate(before)
        old = executor.loader.project_state(before).apps
        for name in ("team/upgraded", "aaaa", "a%b_c.d", "ab"):
            old.get_model("registry_admin", "Repository").objects.create(name=name)
        MigrationExecutor(connection).migrate(after)
        assert ("aaa", "aaaa") in stored_trigrams()
        assert stored_trigrams() == expected_trigrams()
        browse._code_point_order_cache.clear()
        found = browse._trigram_page(Repository.objects.all(), None, 5, False, "grade")
        assert [row.name for row in found] == ["team/upgraded"]
    finally:
        MigrationExecutor(connection).migrate(latest)


def _name_order_pages_match(monkeypatch, way, queries, show_empty):
    """Walks every query's name-order pages both ways at several page sizes, each equal to the
    whole-table query; returns the queries the `way` (a browse function's name) answered."""
    answers = []
    original = getattr(browse, way)

    def spy(*args, **kwargs):
        found = original(*args, **kwargs)
        answers.append((args[-1], found is not None))
        return found

    monkeypatch.setattr(browse, way, spy)
    for query in queries:
        expected = oracle(query, "name", show_empty)
        for per_page in (1, 2, 3, 50):
            forward, _page = walk_forward(query, "name", show_empty, per_page)
            assert forward == expected, (query, per_page)
            assert walk_backward(query, "name", show_empty, per_page) == expected, (query, per_page)
    return {query for query, done in answers if done}
