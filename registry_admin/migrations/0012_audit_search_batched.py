# ruff: noqa: S608  (constant SQL built from the constants below; no input reaches it)
"""SQLite: new audit events join the text index in batches instead of by a trigger per row,
and a registry event is queued for the batched step by a trigger, in its INSERT statement.

The FTS5 insert trigger of migration 0008 made every stored notification flush a new index
segment in its own transaction, about a quarter of the webhook's time. From here on the events
stored since the last batch (every row above the index's highest rowid: ids only grow, and SQLite
has one writer at a time) are added by `models.audit.index_new_events()`, called with each batch
of stored notifications; until then a search finds them by scanning that short tail. The update
trigger only re-indexes rows already in the index; the delete trigger is unchanged.

The queueing trigger lets the webhook store and queue an event with one statement, outside any
explicit transaction (a statement and its triggers are atomic), as PostgreSQL already does with
a data-modifying CTE. Whatever applies an event itself (`NOTIFICATIONS_APPLY_DELAY=0`) removes
its queue row in the same transaction.

PostgreSQL keeps its trigram index, which the database maintains itself.
"""

from django.db import migrations

TABLE = "registry_admin_auditevent"
SEARCH = "registry_admin_auditevent_search"
# As in 0008 (a migration must not import code that later changes).
SQLITE_DOCUMENT = (
    "{p}repository || char(31) || {p}tag || char(31) || {p}digest || char(31) || {p}actor"
    " || char(31) || {p}action || char(31) || {p}event_id || char(31) || {p}request_id"
    " || char(31) || {p}request_addr || char(31) || {p}request_useragent || char(31) || "
    "{p}media_type || char(31) || CASE WHEN {p}source = 'portal' THEN {p}raw ELSE '' END"
)
UPDATE_TRIGGER_0008 = (
    f"CREATE TRIGGER {TABLE}_search_au AFTER UPDATE ON {TABLE} "
    f"BEGIN DELETE FROM {SEARCH} WHERE rowid = old.id; "
    f"INSERT INTO {SEARCH} (rowid, doc) VALUES (new.id, {SQLITE_DOCUMENT.format(p='new.')}); END"
)

PENDING = "registry_admin_pendingevent"

FORWARD = [
    f"CREATE TRIGGER {TABLE}_pending_ai AFTER INSERT ON {TABLE} WHEN new.source = 'registry' "
    f"BEGIN INSERT INTO {PENDING} (event_id) VALUES (new.id); END",
    f"DROP TRIGGER IF EXISTS {TABLE}_search_ai",
    f"DROP TRIGGER IF EXISTS {TABLE}_search_au",
    # A row still in the unindexed tail is found by the tail's scan, changed or not.
    f"CREATE TRIGGER {TABLE}_search_au AFTER UPDATE ON {TABLE} "
    f"WHEN EXISTS (SELECT 1 FROM {SEARCH} WHERE rowid = old.id) "
    f"BEGIN DELETE FROM {SEARCH} WHERE rowid = old.id; "
    f"INSERT INTO {SEARCH} (rowid, doc) VALUES (new.id, {SQLITE_DOCUMENT.format(p='new.')}); END",
]
BACKWARD = [
    f"DROP TRIGGER IF EXISTS {TABLE}_pending_ai",
    f"INSERT INTO {SEARCH} (rowid, doc) SELECT id, {SQLITE_DOCUMENT.format(p='')} FROM {TABLE} "
    f"WHERE id > (SELECT coalesce(max(rowid), 0) FROM {SEARCH})",
    f"DROP TRIGGER IF EXISTS {TABLE}_search_au",
    UPDATE_TRIGGER_0008,
    f"CREATE TRIGGER {TABLE}_search_ai AFTER INSERT ON {TABLE} "
    f"BEGIN INSERT INTO {SEARCH} (rowid, doc) "
    f"VALUES (new.id, {SQLITE_DOCUMENT.format(p='new.')}); END",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "sqlite":
            for sql in statements:
                schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("registry_admin", "0011_daily_activity")]

    operations = [migrations.RunPython(_run(FORWARD), _run(BACKWARD))]
