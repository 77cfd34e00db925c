"""What the repository pages read from the index: repository lists with their sorts and
search, a repository's tags in version order, the header's totals, and the registry's status
line (its ping, cached, and when the index was last reconciled).

Reads only: the index is written by `registry_admin.index` (from notifications and portal
actions) and `registry_admin.reconcile`.
"""

import base64
import binascii
import contextlib
import functools
import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.core.paginator import Paginator
from django.db import OperationalError, connection, transaction
from django.db.models import F, Max

from . import db, pulls, referrers, registry, worker
from .models import JobKind, Manifest, Repository, Tag


@dataclass(frozen=True)
class RepositorySort:
    """A sort of the repository list: a column, largest first, the name breaking ties; rows
    without a value (never pushed or pulled since the portal watched) after all the others.
    The name sort has no column. Each is served by an index on (column DESC, name)."""

    label: str
    column: str | None = None
    nullable: bool = False


REPOSITORY_SORTS = {
    "name": RepositorySort("Name"),
    "push": RepositorySort("Last push", "last_push_at", nullable=True),
    "size": RepositorySort("Size", "total_size"),
    "tags": RepositorySort("Tag count", "tag_count"),
    "pulled": RepositorySort("Last pull", "last_pulled_at", nullable=True),
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


# A search first asks the name index for at most this many matches: a rarer query is paged
# over exactly those rows (and its count is exact); a commoner one walks the sort's index and
# keeps the names that match, which finds a page quickly precisely because matches are common.
SEARCH_CANDIDATES = 1000
# Above SEARCH_CANDIDATES, a search whose matches come late in the sort's order (a team whose
# names sort last) would walk nearly the whole index. It first walks at most LATE_WALK index
# entries; if the page is not there and the name index holds about LATE_CANDIDATES matches or
# fewer, the database sorts those matches instead (a top-N sort, its cost the number of
# matches, not the position of the first one).
LATE_WALK = 10_000
LATE_CANDIDATES = 50_000
# SQLite's virtual machine takes about 5 steps per index entry a walk filters out.
SQLITE_STEPS_PER_ENTRY = 6
# How many of a trigram's first matches tell how common it is (SQLite's name index).
TRIGRAM_SAMPLE = 200
# FTS5's trigram index answers substrings of at least three characters.
TRIGRAM = 3
# In name order, a search is first read as the names starting with it (one range of the
# name's B-tree) and those holding it further on, from the index of names without their
# first character (migration 0026), when that index holds at most this many of the latter.
TAIL_CANDIDATES = 1000
# In name order, a search no name starts with is read from the name lists of its trigrams
# (migration 0027) in rounds, a window of these sizes further each: every list in the first,
# then the TRIGRAM_BEST_LISTS whose names matched most, until one list gives the page; after
# about TRIGRAM_BUDGET entries in all, the other ways.
TRIGRAM_WINDOWS = (64, 256, 1024, 4096, 16384)
TRIGRAM_BEST_LISTS = 2
TRIGRAM_BUDGET = 24_000
# Delta rows (migration 0016's triggers) the header's totals fold into one beyond this many.
TOTALS_FOLD_AT = 500


@dataclass
class RepositoryPage:
    """One page of the repository list and the links around it. `matches` is the exact number
    of repositories the filter selects, or None when a search has more than SEARCH_CANDIDATES."""

    rows: list
    matches: int | None
    next_cursor: str = ""
    previous_cursor: str = ""
    has_previous: bool = False

    @property
    def has_next(self):
        return bool(self.next_cursor)


class PageCursor:
    """A page boundary in the URL: the sort, and the boundary row's sort value and name, so the
    next page starts right after it in one index range, however deep. Plain URL-safe text
    (a link stays shareable); anything else is refused with ValueError."""

    MAX_LENGTH = 600

    @staticmethod
    def encode(sort, row):
        spec = REPOSITORY_SORTS[sort]
        value = getattr(row, spec.column) if spec.column else None
        if isinstance(value, datetime):
            value = value.isoformat()
        text = json.dumps([sort, value, row.name], separators=(",", ":"))
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @staticmethod
    def decode(sort, text):
        """(value, name) of a cursor made for `sort`."""
        if not text or len(text) > PageCursor.MAX_LENGTH:
            raise ValueError("not a page cursor")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            made_for, value, name = json.loads(raw)
        except (ValueError, TypeError, binascii.Error):
            raise ValueError("not a page cursor") from None
        if made_for != sort or not isinstance(name, str) or len(name) > 255:
            raise ValueError("this page link belongs to another sort")
        spec = REPOSITORY_SORTS[sort]
        if spec.column is None:
            if value is not None:
                raise ValueError("not a page cursor")
        elif value is None:
            if not spec.nullable:
                raise ValueError("not a page cursor")
        elif spec.nullable:
            value = _aware_datetime(value)
        elif type(value) is not int or not 0 <= value < 2**63:
            raise ValueError("not a page cursor")
        return value, name


def _aware_datetime(text):
    if not isinstance(text, str) or len(text) > 40:
        raise ValueError("not a page cursor")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not a page cursor") from None
    if value.tzinfo is None:
        raise ValueError("not a page cursor")
    return value


def repository_page(
    query="",
    sort="name",
    show_empty=False,
    after=None,
    before=None,
    last=False,
    per_page=50,
    totals=None,
):
    """A page of the repository list: names containing `query`, in `sort` order, starting after
    the `after` cursor, ending before the `before` cursor, or the last page (`last`). Every
    query is an index range of at most a page, whatever the number of repositories: nothing
    is counted or sorted as a whole (the header's totals are kept: `header_totals`, or `totals`
    when the caller has them)."""
    spec = REPOSITORY_SORTS.get(sort) or REPOSITORY_SORTS["name"]
    sort = sort if sort in REPOSITORY_SORTS else "name"
    rows = Repository.objects.all()
    if not show_empty:
        rows = rows.filter(is_empty=False)
    matches = None
    many, estimate = False, None
    if query:
        query = query.lower()
        candidates, estimate = _name_candidates(query, show_empty)
        if candidates is None:
            many = True
        else:
            rows = rows.filter(pk__in=candidates)
            matches = len(candidates)
    else:
        totals = totals or header_totals()
        matches = totals["repositories"] + (totals["empty"] if show_empty else 0)
    limit = per_page + 1
    backward = before is not None or last
    cursor = None
    if backward and before is not None:
        cursor = PageCursor.decode(sort, before)
    elif not backward and after is not None:
        cursor = PageCursor.decode(sort, after)
    if many:
        found = _search_many(rows, spec, cursor, limit, backward, query, estimate)
    elif backward:
        found = _collect(_backward_parts(rows, spec, cursor), limit, _plain)[::-1]
    else:
        found = _collect(_forward_parts(rows, spec, cursor), limit, _plain)
    if backward:
        has_previous = len(found) > per_page
        found = found[-per_page:]
        has_next = not last
    else:
        has_next = len(found) > per_page
        found = found[:per_page]
        has_previous = after is not None
    return RepositoryPage(
        rows=found,
        matches=matches,
        next_cursor=PageCursor.encode(sort, found[-1]) if found and has_next else "",
        previous_cursor=PageCursor.encode(sort, found[0]) if found and has_previous else "",
        has_previous=has_previous,
    )


def _forward_parts(rows, spec, cursor):
    """The list after `cursor` ((value, name), or None for the start) as index ranges in order:
    (rows, order) pairs, `order` a tuple of (field, descending). Lazy: a later range is only
    built when the earlier ones held too few rows."""
    if spec.column is None:
        yield (rows.filter(name__gt=cursor[1]) if cursor else rows), (("name", False),)
        return
    column = spec.column
    value, name = cursor or (None, None)
    in_nulls = cursor is not None and value is None
    if not in_nulls:
        if cursor is not None:
            # The rest of the cursor's run of equal values first, then the smaller values.
            yield rows.filter(**{column: value, "name__gt": name}), (("name", False),)
            smaller = rows.filter(**{f"{column}__lt": value})
        else:
            smaller = rows.filter(**{f"{column}__isnull": False}) if spec.nullable else rows
        yield smaller, ((column, True), ("name", False))
    if spec.nullable:
        nulls = rows.filter(**{f"{column}__isnull": True})
        if in_nulls:
            nulls = nulls.filter(name__gt=name)
        yield nulls, (("name", False),)


def _backward_parts(rows, spec, cursor):
    """The list before `cursor` (None: from the very end) as index ranges, last row first."""
    if spec.column is None:
        yield (rows.filter(name__lt=cursor[1]) if cursor else rows), (("name", True),)
        return
    column = spec.column
    value, name = cursor or (None, None)
    if cursor is None or value is None:
        if spec.nullable:
            nulls = rows.filter(**{f"{column}__isnull": True})
            if cursor is not None:
                nulls = nulls.filter(name__lt=name)
            yield nulls, (("name", True),)
        larger = rows.filter(**{f"{column}__isnull": False}) if spec.nullable else rows
    else:
        yield rows.filter(**{column: value, "name__lt": name}), (("name", True),)
        larger = rows.filter(**{f"{column}__gt": value})
    yield larger, ((column, False), ("name", True))


def _collect(parts, limit, fetch):
    """Up to `limit` rows from the ranges in order, each read with `fetch(rows, order, n)`."""
    found = []
    for part, order in parts:
        if len(found) >= limit:
            break
        found += fetch(part, order, limit - len(found))
    return found


def _order_by(order):
    return [F(field).desc() if descending else F(field).asc() for field, descending in order]


def _plain(rows, order, n):
    return list(rows.order_by(*_order_by(order))[:n])


class _OutOfBudget(Exception):
    pass


def _search_many(rows, spec, cursor, limit, backward, query, estimate):
    """A page of a search with more than SEARCH_CANDIDATES matches (about `estimate`, or None
    when the name index cannot say). The page is found on the keys alone (name and sort column:
    the sort's index, without reading the table), then its rows are read by name.

    A short walk of the sort's index comes first (common matches are found at once); then, if
    the name index holds few enough matches, the database sorts those; otherwise the walk goes
    on as far as the matches are."""
    if spec.column is None:
        found = _prefix_page(rows, cursor, limit, backward, query)
        if found is None:
            found = _trigram_page(rows, cursor, limit, backward, query)
        if found is not None:
            return found
    columns = ("name", spec.column) if spec.column else ("name",)
    keys = rows.values_list(*columns)
    parts = _backward_parts if backward else _forward_parts
    walk = functools.partial(_walk, query=query)
    found = None
    if estimate is not None and estimate <= LATE_CANDIDATES:
        budget = [LATE_WALK]
        try:
            found = _collect(
                parts(keys, spec, cursor), limit, functools.partial(walk, budget=budget)
            )
        except _OutOfBudget:
            # The page is further on: the name index's matches, sorted (unless there are more
            # than LATE_CANDIDATES after all: then the whole walk below).
            with contextlib.suppress(_OutOfBudget):
                found = _collect(
                    parts(keys, spec, cursor),
                    limit,
                    functools.partial(_sorted_matches, query=query),
                )
    if found is None:
        found = _collect(parts(keys, spec, cursor), limit, walk)
    if backward:
        found.reverse()
    by_name = Repository.objects.in_bulk([key[0] for key in found], field_name="name")
    return [by_name[key[0]] for key in found if key[0] in by_name]


def _prefix_page(rows, cursor, limit, backward, query):
    """Name order: the first `limit` of `rows` after `cursor` (backward: the last `limit` before
    it) whose name contains `query`, in the page's order; None when this way does not apply.

    A query that starts many names (`team-9/`) has matches all over the name index's later
    part. Those starting with it are one range of the name's B-tree, read only as far as the
    page; the others hold it after their first character, which the tail index finds (at most
    TAIL_CANDIDATES of them, else None). Both sets are read up to the page, then merged by
    name: the database's name order must be code point order (SQLite's; PostgreSQL's "C" or
    "C.UTF-8" collation, else None)."""
    end = _prefix_end(query)
    if end is None or len(query) < TRIGRAM or not _code_point_order():
        return None
    if cursor is not None:
        rows = rows.filter(**{"name__lt" if backward else "name__gt": cursor[1]})
    order = F("name").desc() if backward else F("name").asc()
    found = {
        row.name: row for row in rows.filter(name__gte=query, name__lt=end).order_by(order)[:limit]
    }
    if not found:
        # No name (on this side of the cursor) starts with the query: its matches are all
        # further on in names, which the other ways find without asking the tail index.
        return None
    elsewhere = _tail_matches(query)
    if elsewhere is None:
        return None
    if elsewhere:
        found.update(
            (row.name, row) for row in rows.filter(pk__in=elsewhere).order_by(order)[:limit]
        )
    page = sorted(found.values(), key=lambda row: row.name, reverse=backward)[:limit]
    if backward:
        page.reverse()
    return page


def _trigram_page(rows, cursor, limit, backward, query):
    """Name order: as `_prefix_page`, from the per-trigram name lists of migration 0027; None
    when this way does not apply or did not find the page within TRIGRAM_BUDGET entries.

    Every name after `cursor` that contains `query` is in the list of each of its trigrams, in
    name order; so if a list's first entries after the cursor hold `limit` matches that `rows`
    keeps (or the list ends there), those are the page, exactly. A list whose names mostly
    match (`4/s` for `4/service-`) gives it within a window or two, wherever the matches start
    in the name order. The lists are read in rounds, each a window further (TRIGRAM_WINDOWS):
    all of them at first, then only those whose names matched best so far (any one list gives
    the exact page; the densest gives it soonest)."""
    if len(query) < TRIGRAM or not _code_point_order():
        return None
    grams = list(dict.fromkeys(query[i : i + TRIGRAM] for i in range(len(query) - TRIGRAM + 1)))
    lists = [_TrigramList(gram, cursor[1] if cursor else None) for gram in grams]
    budget = TRIGRAM_BUDGET
    with connection.cursor() as db_cursor:
        for round_number, window in enumerate(TRIGRAM_WINDOWS):
            ranked = sorted(lists, key=_TrigramList.share, reverse=True)
            for listed in ranked if round_number == 0 else ranked[:TRIGRAM_BEST_LISTS]:
                if budget <= 0:
                    return None
                budget -= listed.read(db_cursor, window, backward, query)
                page = listed.page(rows, limit)
                if page is not None:
                    return page[::-1] if backward else page
    return None


@dataclass
class _TrigramList:
    """How far one trigram's name list has been read (from the cursor) and what it held."""

    gram: str
    last: str | None  # the last name read (the cursor's at first)
    read_entries: int = 0
    ended: bool = False
    matching: list = field(default_factory=list)  # names holding the query, in page order
    checked: int = 0  # how many of `matching` were looked up in `rows`
    kept: list = field(default_factory=list)  # the rows `rows` keeps of those, in order

    def share(self):
        return len(self.matching) / self.read_entries if self.read_entries else 0

    def read(self, db_cursor, window, backward, query):
        """Reads the next `window` entries; returns how many there were."""
        if self.ended:
            return 0
        after = "" if self.last is None else f" AND name {'<' if backward else '>'} %s"
        db_cursor.execute(
            "SELECT name FROM registry_admin_repository_trigram WHERE trigram = %s"  # noqa: S608
            f"{after} ORDER BY name{' DESC' if backward else ''} LIMIT %s",
            [self.gram, *([] if self.last is None else [self.last]), window],
        )
        names = [name for (name,) in db_cursor.fetchall()]
        self.read_entries += len(names)
        self.ended = len(names) < window
        if names:
            self.last = names[-1]
        self.matching += [name for name in names if query in name]
        return len(names)

    def page(self, rows, limit):
        """The first `limit` rows of `rows` among the matches read (all of them when the list
        ended), in page order; None while the list may still hold earlier ones."""
        while len(self.kept) < limit and self.checked < len(self.matching):
            if not self.ended and len(self.kept) + len(self.matching) - self.checked < limit:
                return None
            names = self.matching[self.checked : self.checked + max(2 * limit, 64)]
            by_name = rows.in_bulk(names, field_name="name")
            self.kept += [by_name[name] for name in names if name in by_name]
            self.checked += len(names)
        if len(self.kept) >= limit or self.ended:
            return self.kept[:limit]
        return None


def _prefix_end(query):
    """The text just above every text starting with `query` in code point order (the range
    [query, end) holds exactly those), or None."""
    last = ord(query[-1]) + 1
    if last > 0x10FFFF or 0xD800 <= last <= 0xDFFF:
        return None
    return query[:-1] + chr(last)


_code_point_order_cache = {}


def _code_point_order():
    """Whether the database orders repository names by code point (as Python compares them)."""
    if connection.vendor == "sqlite":
        return True  # the name column has SQLite's BINARY collation: UTF-8 bytes
    if connection.vendor != "postgresql":
        return False
    if connection.alias not in _code_point_order_cache:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT d.datcollate, a.attcollation = 0 OR a.attcollation = "
                "(SELECT oid FROM pg_collation WHERE collname = 'default'), "
                "to_jsonb(d) ->> 'datlocprovider' FROM pg_database d, pg_attribute a "
                "WHERE d.datname = current_database() AND a.attrelid = %s::regclass "
                "AND a.attname = 'name'",
                [Repository._meta.db_table],
            )
            collate, default_collation, provider = cursor.fetchone()
        _code_point_order_cache[connection.alias] = (
            bool(default_collation)
            and provider in (None, "c")
            and collate.lower() in ("c", "posix", "c.utf-8", "c.utf8")
        )
    return _code_point_order_cache[connection.alias]


def _tail_matches(query):
    """The ids of the repositories whose name holds `query` after its first character (empty
    ones too), from the tail index of migration 0026; None when there are more than
    TAIL_CANDIDATES."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                "SELECT t.rowid FROM registry_admin_repository_tail t WHERE t.tail MATCH %s "
                "AND instr(t.tail, %s) > 0 LIMIT %s",
                [
                    _rare_trigrams(query, "registry_admin_repository_tail", "tail"),
                    query,
                    TAIL_CANDIDATES + 1,
                ],
            )
        else:
            # The trigrams of a part of the query often come together (`m-9/`: every name of
            # team 9 has them all), and the names holding the query after their first
            # character are few: the part whose rarest trigram is rarest ("tea") is asked.
            part = _selective_part(query, [name[1:] for name in _name_sample()], joint=min)
            cursor.execute(
                "SELECT id FROM registry_admin_repository WHERE substr(name, 2) LIKE %s "
                "AND strpos(substr(name, 2), %s) > 0 LIMIT %s",
                [f"%{_like_escaped(part)}%", query, TAIL_CANDIDATES + 1],
            )
        found = [pk for (pk,) in cursor.fetchall()]
    return None if len(found) > TAIL_CANDIDATES else found


def _like_escaped(text):
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _walk(keys, order, n, query, budget=None):
    """The first `n` keys in `order` whose name contains `query`: the sort's index walked and
    filtered. With a `budget` (a one-item list, spent as it goes) at most about that many index
    entries are read, and _OutOfBudget is raised if they held fewer than `n` matches."""
    matching = keys.filter(name__contains=query).order_by(*_order_by(order))[:n]
    if budget is None:
        return list(matching)
    if connection.vendor == "sqlite":
        # SQLite filters the names on the index and reads the table only for a match (a window
        # of the index as a subquery would read the table for every row): the walk itself,
        # stopped after its budget of virtual machine steps.
        return _interrupted_after(budget[0] * SQLITE_STEPS_PER_ENTRY, lambda: list(matching))
    window = keys.order_by(*_order_by(order))[: budget[0]]
    hits = _within(window, order, n, query)
    if len(hits) >= n:
        return hits
    seen = _count(window)
    if seen >= budget[0]:
        raise _OutOfBudget
    budget[0] -= seen
    return hits


# How many SQLite virtual machine steps apart the progress handler of a bounded walk is called.
PROGRESS_STEPS = 1000


def _interrupted_after(steps, read):
    """`read()`, stopped (_OutOfBudget) after about `steps` SQLite virtual machine steps.

    SQLite calls the handler each time a statement's steps reach a multiple of the interval,
    counting its earlier runs too (a cached statement): a handler that stopped at its first
    call stopped a run that had barely started whenever the earlier runs had left the count
    just short of a multiple (about one search in ten). The handler counts its calls instead,
    one more than the budget holds (the first may come early)."""
    connection.ensure_connection()
    raw = connection.connection
    calls = [0]
    interval = max(1, min(PROGRESS_STEPS, steps))
    allowed = steps // interval + 1

    def progress():
        calls[0] += 1
        return calls[0] > allowed

    raw.set_progress_handler(progress, interval)
    try:
        # Inside a caller's transaction, in a savepoint of its own: an interrupted statement
        # must leave that transaction usable. Outside one, no transaction: the portal's SQLite
        # transactions are IMMEDIATE, and a page view would wait for the write lock.
        in_transaction = connection.in_atomic_block
        with transaction.atomic() if in_transaction else contextlib.nullcontext():
            return read()
    except OperationalError as error:
        if "interrupt" not in str(error):
            raise
        raise _OutOfBudget from None
    finally:
        raw.set_progress_handler(None, 0)


def _within(window, order, n, query):
    """The first `n` keys of the sliced, ordered `window` whose name contains `query`, read as
    one query over the window (the filter applied to its rows only)."""
    sql, params = window.query.sql_with_params()
    marked = window.model.objects.values_list("name").filter(name__contains=query)
    where, where_params = _where_of(marked)
    outer = ", ".join(f"{i + 1}{' DESC' if d else ''}" for i, d in _positions(window, order))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT * FROM ({sql}) w WHERE {where} ORDER BY {outer} LIMIT %s",  # noqa: S608
            [*params, *where_params, n],
        )
        return cursor.fetchall()


def _sorted_matches(keys, order, n, query):
    """The first `n` keys in `order` whose name contains `query`, from the name index: all its
    matches (ids only) read, then sorted by the database (top-N). _OutOfBudget when the name
    index holds more than LATE_CANDIDATES of them."""
    matching = _containing(keys, query).order_by()
    if connection.vendor == "sqlite" and [field for field, _ in order] == ["name"]:
        return _sorted_by_name(matching, order[0][1], n, _rare_trigrams(query))
    if connection.vendor == "sqlite":
        matching = matching.extra(  # noqa: S610 (constant SQL, the query a parameter)
            where=[
                "registry_admin_repository.id IN (SELECT rowid FROM "
                "registry_admin_repository_search WHERE registry_admin_repository_search.name "
                "MATCH %s)"
            ],
            params=[_rare_trigrams(query)],
        )
    # The inner query has a limit, so neither database folds it into the outer one: it is
    # planned on its own (the name index) and the outer one sorts its rows.
    inner = matching[: LATE_CANDIDATES + 1]
    sql, params = inner.query.sql_with_params()
    outer = ", ".join(f"{i + 1}{' DESC' if d else ''}" for i, d in _positions(keys, order))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT *, count(*) OVER () FROM ({sql}) m ORDER BY {outer} LIMIT %s",  # noqa: S608
            [*params, n],
        )
        found = cursor.fetchall()
    if found and found[0][-1] > LATE_CANDIDATES:
        raise _OutOfBudget
    return [row[:-1] for row in found]


def _sorted_by_name(matching, descending, n, match):
    """SQLite, name order: the names come sorted from the name index's own copy of them (a
    small table; the repository rows are wide), and repository rows are read only until the
    page is full."""
    search = "registry_admin_repository_search"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {search} WHERE {search}.name MATCH %s "  # noqa: S608
            "LIMIT %s)",
            [match, LATE_CANDIDATES + 1],
        )
        if cursor.fetchone()[0] > LATE_CANDIDATES:
            raise _OutOfBudget
        compiler = matching.query.get_compiler(connection=connection)
        where, params = compiler.compile(matching.query.where)
        # The subquery's limit keeps it (and its order) whole; CROSS JOIN keeps it the outer
        # loop, so the rows come in its order.
        cursor.execute(
            "SELECT registry_admin_repository.name FROM (SELECT rowid AS id, name "  # noqa: S608
            f"FROM {search} WHERE {search}.name MATCH %s "
            f"ORDER BY name{' DESC' if descending else ''} LIMIT %s) s "
            "CROSS JOIN registry_admin_repository ON registry_admin_repository.id = s.id "
            f"WHERE {where} LIMIT %s",
            [match, LATE_CANDIDATES + 1, *params, n],
        )
        return cursor.fetchall()


def _positions(keys, order):
    """(column position in `keys`' values_list, descending) for each field of `order`."""
    fields = list(keys.query.values_select)
    return [(fields.index(field), descending) for field, descending in order]


def _where_of(queryset):
    """The WHERE clause of `queryset` with its parameters, its column names unqualified (to
    apply to a derived table with the same column names)."""
    compiler = queryset.query.get_compiler(connection=connection)
    where, params = compiler.compile(queryset.query.where)
    table = connection.ops.quote_name(queryset.model._meta.db_table)
    return where.replace(f"{table}.", ""), params


def _count(window):
    sql, params = window.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM ({sql}) w", params)  # noqa: S608
        return cursor.fetchone()[0]


def _phrase(query):
    return '"' + query.replace('"', '""') + '"'


def _rare_trigrams(query, table="registry_admin_repository_search", column="name"):
    """An FTS5 query for the rarest two trigrams of `query`: it matches every name containing
    `query` (and more: the caller checks the names). FTS5 reads every token's whole list for a
    phrase, so "team-9/" costs as much as "tea", which every name holds; its two rarest
    trigrams cost only their own (fewer) matches. How rare each is comes from how far into the
    ids its first TRIGRAM_SAMPLE matches reach."""
    grams = list(dict.fromkeys(query[i : i + TRIGRAM] for i in range(len(query) - TRIGRAM + 1)))
    if len(grams) <= 2:
        return _phrase(query)
    sample = (
        f"SELECT %s, count(*), max(rowid) FROM (SELECT rowid FROM {table} "  # noqa: S608
        f"WHERE {table}.{column} MATCH %s LIMIT %s)"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            " UNION ALL ".join([sample] * len(grams)),
            [value for n, gram in enumerate(grams) for value in (n, _phrase(gram), TRIGRAM_SAMPLE)],
        )
        # A trigram with fewer matches than the sample is counted whole: rarer than any other.
        share = {
            grams[n]: (count / (reached or 1), 0) if count >= TRIGRAM_SAMPLE else (0, count)
            for n, count, reached in cursor.fetchall()
        }
    rare = sorted(grams, key=lambda gram: share[gram])[:2]
    return " AND ".join(_phrase(gram) for gram in rare)


def _name_candidates(query, show_empty):
    """(ids, None): the ids of the repositories whose name contains `query` (lowercase), when
    there are at most SEARCH_CANDIDATES; (None, estimate) when there are more, `estimate` their
    rough number (None when the name index cannot serve the query). SQLite asks its FTS5
    trigram table (three characters or more); PostgreSQL plans `LIKE '%…%'` over its pg_trgm
    index itself."""
    indexed = len(query) >= TRIGRAM
    if connection.vendor == "sqlite" and indexed:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT r.id, r.name FROM registry_admin_repository_search s "
                "JOIN registry_admin_repository r ON r.id = s.rowid "
                "WHERE s.name MATCH %s AND instr(r.name, %s) > 0 AND (%s OR NOT r.is_empty) "
                "LIMIT %s",
                [_rare_trigrams(query), query, show_empty, SEARCH_CANDIDATES + 1],
            )
            found = cursor.fetchall()
    else:
        # Unordered: PostgreSQL then answers from its trigram index instead of walking the
        # names in order (the model's default ordering) and filtering them.
        rows = _containing(Repository.objects.order_by(), query)
        if not show_empty:
            rows = rows.filter(is_empty=False)
        found = list(rows.values_list("pk", "name")[: SEARCH_CANDIDATES + 1])
    if len(found) > SEARCH_CANDIDATES:
        return None, _estimate(found) if indexed else None
    # The trigram index folds case and Unicode; the list matches as `contains` always did.
    return [pk for pk, name in found if query in name], None


def _containing(rows, query):
    """`rows` whose name contains `query`. PostgreSQL's trigram index is asked for the query's
    most selective part only (the names are then checked for the whole query): pg_trgm reads
    the posting list of every trigram of the pattern, and those of a word every name has
    ("team", "service") cost more than the rare ones save."""
    if connection.vendor != "postgresql" or len(query) < TRIGRAM:
        return rows.filter(name__contains=query)
    part = _selective_part(query, _name_sample())
    if part == query:
        return rows.filter(name__contains=query)
    return rows.filter(name__contains=part).extra(  # noqa: S610 (constant SQL)
        where=["strpos(registry_admin_repository.name, %s) > 0"], params=[query]
    )


# PostgreSQL's sample of the names (pg_stats' histogram), read at most this often per process.
NAME_SAMPLE_SECONDS = 300
_name_sample_cache = {}


def _name_sample():
    """Up to ~100 names evenly spread over the name order, from the last ANALYZE."""
    now = time.monotonic()
    cached = _name_sample_cache.get(connection.alias)
    if cached and now - cached[0] < NAME_SAMPLE_SECONDS:
        return cached[1]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT histogram_bounds::text::text[] FROM pg_stats WHERE schemaname = "
            "current_schema() AND tablename = 'registry_admin_repository' AND attname = 'name'"
        )
        row = cursor.fetchone()
    sample = list(row[0]) if row and row[0] else []
    _name_sample_cache[connection.alias] = (now, sample)
    return sample


def _trigrams(text, bounded_left=True, bounded_right=True):
    """pg_trgm's trigrams of `text`: per word (a run of letters and digits), two blanks before
    and one after where the word is known to start or end (inside `text`, or at its ends when
    `bounded_left` / `bounded_right`: a whole name, not a part of a pattern)."""
    text = text.lower()
    found = set()
    for word in re.finditer(r"[^\W_]+", text):
        left = "  " if bounded_left or word.start() > 0 else ""
        right = " " if bounded_right or word.end() < len(text) else ""
        padded = left + word.group() + right
        found |= {padded[i : i + 3] for i in range(len(padded) - 2)}
    return found


def _selective_part(query, sample, longest=16, recheck=100, joint=math.prod):
    """The part of `query` (a substring) whose pg_trgm trigrams make the cheapest index scan,
    as the name sample tells how common each trigram is: reading a trigram's posting list
    costs its share of the names, and every name the trigrams leave is read again to check
    (`recheck` times dearer); `joint` makes the share the trigrams leave of theirs (`min`: they
    may all come together). The whole query when there is no sample."""
    if not sample:
        return query
    counts = {}
    for name in sample:
        for gram in _trigrams(name):
            counts[gram] = counts.get(gram, 0) + 1
    size = len(sample)

    def cost(part):
        grams = _trigrams(part, bounded_left=False, bounded_right=False)
        if not grams:
            return None
        shares = [max(counts.get(gram, 0), 0.5) / size for gram in grams]
        return sum(shares) + recheck * joint(shares)

    best, best_cost = query, cost(query)
    if best_cost is None:
        return query
    for start in range(len(query)):
        for end in range(start + 2, min(len(query), start + longest) + 1):
            part = query[start:end]
            part_cost = cost(part)
            if part_cost is not None and part_cost < best_cost:
                best, best_cost = part, part_cost
    return best


def _estimate(found):
    """How many matches there are, from the first ones found: both databases read them in
    table order (FTS5 in rowid order; PostgreSQL's bitmap scans in physical order, its
    sequential scans too, though from wherever the last one stopped), so the span of ids they
    cover tells the share that matches. Rough (ids and physical order need not agree); it
    only chooses how the page is found, never what it holds."""
    ids = [pk for pk, _ in found]
    span = max(ids) - min(ids) + 1
    total = Repository.objects.aggregate(newest=Max("id"))["newest"] or span
    return len(found) * total // span


def header_totals():
    """The repositories page header's totals, exact: {"repositories" (with tags), "empty",
    "tags"}: the folded totals plus the delta rows the database's triggers added since
    (migration 0016), one primary-key range; folded again once there are many."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT b.repositories + coalesce(sum(d.repositories), 0), "
            "b.empty + coalesce(sum(d.empty), 0), b.tags + coalesce(sum(d.tags), 0), "
            "count(d.id), max(d.id) FROM registry_admin_repositorytotals_base b "
            "LEFT JOIN registry_admin_repositorytotals d ON d.id > b.folded_through "
            "GROUP BY b.repositories, b.empty, b.tags"
        )
        repositories, empty, tags, deltas, newest = cursor.fetchone()
    if deltas > TOTALS_FOLD_AT:
        _fold_totals(newest)
    return {"repositories": int(repositories), "empty": int(empty), "tags": int(tags)}


def _fold_totals(newest):
    """Add the delta rows up to id `newest` to the folded totals and delete them, in one
    transaction (a reader sees them either way once). Two folds at once take turns (an
    advisory lock on PostgreSQL, SQLite's single writer), so no delta is added twice."""
    with transaction.atomic():
        db.hold_transaction_lock(db.AdvisoryKey.REPOSITORY_TOTALS)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT coalesce(sum(d.repositories), 0), coalesce(sum(d.empty), 0), "
                "coalesce(sum(d.tags), 0), count(d.id), max(b.folded_through) "
                "FROM registry_admin_repositorytotals_base b "
                "LEFT JOIN registry_admin_repositorytotals d "
                "ON d.id > b.folded_through AND d.id <= %s",
                [newest],
            )
            repositories, empty, tags, rows, folded_through = cursor.fetchone()
            if not rows:
                return
            cursor.execute(
                "UPDATE registry_admin_repositorytotals_base SET folded_through = %s, "
                "repositories = repositories + %s, empty = empty + %s, tags = tags + %s",
                [newest, repositories, empty, tags],
            )
            cursor.execute(
                "DELETE FROM registry_admin_repositorytotals WHERE id > %s AND id <= %s",
                [folded_through, newest],
            )


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
    # [(word, count)] of the signatures, SBOMs, attestations attached to its image.
    badges: list = field(default_factory=list)

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


def tag_page(
    repository, sort="created", query="", page_number=1, per_page=100, show_referrers=False
):
    """One page (a Django Page of TagRows) of the repository's tags, filtered by substring and
    sorted. Sorting runs in Python over plain tuples (semver order has no SQL form); only the
    page's rows become model instances. Referrer tags (signatures, SBOMs, attestations, the
    fallback index) are left out unless `show_referrers`; each row's image gets its badges."""
    sort = sort if sort in _SORT_COLUMNS else "created"
    columns = ["pk", "name", "digest"] + ([_SORT_COLUMNS[sort]] if _SORT_COLUMNS[sort] else [])
    listed = Tag.objects.filter(repository=repository)
    if not show_referrers:
        listed = referrers.real_tags(listed)
    keys = list(listed.values_list(*columns))
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
    attached = referrers.attached_artifacts(
        repository.pk, {digest for _, _, digest, *_ in page.object_list}
    )
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
                badges=referrers.badge_counts(attached.get(digest, [])),
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
