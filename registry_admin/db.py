"""Database-specific SQL, one home: locks, adding upserts and the prepared audit INSERT.

Everything here works on both supported databases and says what each one does:

- SQLite has a single writer; the portal's transactions begin IMMEDIATE (settings), so a
  transaction that has begun already holds the only write lock, and no advisory lock exists.
- PostgreSQL takes what this module asks for: advisory locks, table locks, prepared statements.

The audit log's text index keeps its SQL beside its model (`models/audit.py`): it is one
feature's storage, written per database from the migrations that created it.
"""

import logging
import threading
import zlib
from enum import IntEnum

import psycopg
from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)

# PostgreSQL advisory locks are keyed (namespace, key): the namespace is any 32-bit number
# unlikely to collide with another application's locks in a shared database. The values are
# fixed: instances of an earlier version on the same database take the same locks.
ADVISORY_NAMESPACE = 0x0757E12


class AdvisoryKey(IntEnum):
    """The second half of each (ADVISORY_NAMESPACE, key) lock; job kinds use crc32 keys."""

    HTPASSWD_FILE = 1
    # Folding the repository list's header totals (browse.header_totals).
    REPOSITORY_TOTALS = 2


# The notification appliers' lock: one 64-bit key (not a pair), as earlier versions take it.
APPLIERS_KEY = 0x0157E816


def job_kind_key(kind):
    """The advisory key of a job kind's run requests (a signed 32-bit crc32 of its name)."""
    return zlib.crc32(kind.encode()) - 2**31


def hold_transaction_lock(key=None, *, single=None):
    """Until the current transaction ends, keep out everyone asking for the same lock:
    (ADVISORY_NAMESPACE, `key`), or the one 64-bit key `single`. Nothing on SQLite, whose
    IMMEDIATE transaction already holds the only write lock."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        if single is not None:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [single])
        else:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ADVISORY_NAMESPACE, key])


def try_session_lock(key):
    """Take (ADVISORY_NAMESPACE, `key`) for this connection's session if free; whether taken.
    Always True on SQLite (nothing to take)."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [ADVISORY_NAMESPACE, key])
        return cursor.fetchone()[0]


def release_session_lock(key):
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [ADVISORY_NAMESPACE, key])


def lock_table_writes(model):
    """Hold off every other writer of `model`'s table until this transaction ends, readers
    not (a recount that replaces the table must not miss a delivery's upsert committed
    meanwhile). SQLite: any write statement takes the database's write lock, even one that
    matches no row."""
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(model._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
    else:
        model.objects.filter(pk=-1).delete()


def insert_or_add(model, rows, key, add, latest=()):
    """Insert `rows` (dicts of column: value) into `model`'s table in one statement; a row whose
    `key` columns are taken adds its `add` columns to the stored ones and keeps the later of
    each `latest` column. The ORM's upsert can only overwrite a column, not add to it.

    Values are adapted by the model's own fields, and every value is a parameter.
    """
    if not rows:
        return
    fields = {name: model._meta.get_field(name) for name in rows[0]}
    names = list(fields)
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    params = []
    for row in rows:
        params += [fields[name].get_db_prep_save(row[name], connection) for name in names]
    placeholders = "(" + ", ".join(["%s"] * len(names)) + ")"
    updates = [f"{quote(c)} = {table}.{quote(c)} + excluded.{quote(c)}" for c in add] + [
        f"{quote(c)} = CASE WHEN excluded.{quote(c)} > {table}.{quote(c)} "
        f"THEN excluded.{quote(c)} ELSE {table}.{quote(c)} END"
        for c in latest
    ]
    # Only names from the model and placeholders are formatted in; every value is a parameter.
    sql = (
        f"INSERT INTO {table} ({', '.join(quote(n) for n in names)}) "  # noqa: S608
        f"VALUES {', '.join([placeholders] * len(rows))} "
        f"ON CONFLICT ({', '.join(quote(k) for k in key)}) DO UPDATE SET {', '.join(updates)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def fetch_prepared(sql, params):
    """Run `sql` and return its rows; on PostgreSQL as a statement the server may prepare.

    PostgreSQL: through a cursor that binds its parameters server-side, which is what lets
    psycopg prepare the statement once it has run a few times on a connection (settings:
    `prepare_threshold`, DATABASE_PREPARED_STATEMENTS). The webhook's one-event INSERT is then
    planned once per connection instead of on every delivery: about 0.1 ms of the database's
    time, on the path the registry waits for. Behind a pooler that hands the statement to a
    server connection that never prepared it, the first failure switches this process to
    Django's own cursors (bound client-side, never prepared) and, outside a transaction (where
    the failed statement changed nothing), runs the statement again at once.
    """
    if connection.vendor == "postgresql" and not _unprepared.is_set():
        try:
            return _fetch_server_bound(sql, params)
        except DatabaseError as exc:
            if not isinstance(exc.__cause__, LOST_PREPARED_STATEMENT):
                raise
            if not _unprepared.is_set():
                _unprepared.set()
                logger.error(
                    "a prepared statement was lost between the portal and PostgreSQL (%s): a "
                    "connection pooler in transaction mode? This process no longer prepares "
                    "statements; set DATABASE_PREPARED_STATEMENTS=0 to start that way",
                    str(exc)[:200],
                )
            if connection.in_atomic_block:
                raise
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _fetch_server_bound(sql, params):
    connection.ensure_connection()
    cursor = psycopg.Cursor(connection.connection)
    # Django's wrapper all the same: its error translation, query logging and wrappers.
    with (
        connection.make_debug_cursor(cursor)
        if connection.queries_logged
        else connection.make_cursor(cursor)
    ) as wrapped:
        wrapped.execute(sql, params)
        return wrapped.fetchall()


# The server does not have the prepared statement psycopg names (26000), has another one by
# that name (42P05), or has another statement under it, from another version of the portal
# (08P01: the parameter count differs).
LOST_PREPARED_STATEMENT = (
    psycopg.errors.InvalidSqlStatementName,
    psycopg.errors.DuplicatePreparedStatement,
    psycopg.errors.ProtocolViolation,
)
# Set for good once a prepared statement was lost (a pooler): a flag every request thread
# reads.
_unprepared = threading.Event()
