# ruff: noqa: S608  (constant SQL built from the constants below; no input reaches it)
"""PostgreSQL: new audit events join the text index in batches, as on SQLite since 0012.

The trigram index of migration 0008 was an expression index on the audit table itself, so every
stored notification paid for its trigrams inside the webhook's statement: about a third of the
database's CPU per delivery (bench/README.md). From here on the documents live in a table of
their own with the trigram index, and an insert only queues the new row's id (a trigger: every
writer is covered). `models.audit.index_new_events()` moves the queued rows into the index with
each batch of stored notifications and in the worker's loop; until then a search finds them by
scanning the short queue. Updates re-index a row in place, deletes and TRUNCATE remove its
document and queue entry, so the index never holds a row the audit table no longer has.

Upgrading copies every stored event's document and builds the index (about as long as 0008's
index build took); webhook deliveries wait for it and the registry retries them.
"""

from django.db import migrations

TABLE = "registry_admin_auditevent"
SEARCH = "registry_admin_auditevent_search"
QUEUE = "registry_admin_auditevent_search_queue"
# As in 0008 (a migration must not import code that later changes).
SEARCH_DOCUMENT = (
    "{p}repository || chr(31) || {p}tag || chr(31) || {p}digest || chr(31) || {p}actor"
    " || chr(31) || {p}action || chr(31) || {p}event_id || chr(31) || {p}request_id"
    " || chr(31) || {p}request_addr || chr(31) || {p}request_useragent || chr(31) || {p}media_type"
    " || chr(31) || CASE WHEN {p}source = 'portal' THEN {p}raw ELSE '' END"
)

FORWARD = [
    f"CREATE TABLE {SEARCH} (id bigint PRIMARY KEY, doc text NOT NULL)",
    f"CREATE TABLE {QUEUE} (id bigint PRIMARY KEY)",
    f"CREATE FUNCTION {TABLE}_search_queue() RETURNS trigger LANGUAGE plpgsql AS $$ "
    f"BEGIN INSERT INTO {QUEUE} (id) VALUES (NEW.id); RETURN NULL; END $$",
    f"CREATE TRIGGER {TABLE}_search_ai AFTER INSERT ON {TABLE} "
    f"FOR EACH ROW EXECUTE FUNCTION {TABLE}_search_queue()",
    f"CREATE FUNCTION {TABLE}_search_update() RETURNS trigger LANGUAGE plpgsql AS $$ "
    f"BEGIN UPDATE {SEARCH} SET doc = {SEARCH_DOCUMENT.format(p='NEW.')} WHERE id = NEW.id; "
    "RETURN NULL; END $$",
    f"CREATE TRIGGER {TABLE}_search_au AFTER UPDATE ON {TABLE} "
    f"FOR EACH ROW EXECUTE FUNCTION {TABLE}_search_update()",
    # One statement per DELETE (audit pruning removes rows in batches of thousands).
    f"CREATE FUNCTION {TABLE}_search_delete() RETURNS trigger LANGUAGE plpgsql AS $$ "
    f"BEGIN DELETE FROM {SEARCH} WHERE id IN (SELECT id FROM gone); "
    f"DELETE FROM {QUEUE} WHERE id IN (SELECT id FROM gone); RETURN NULL; END $$",
    f"CREATE TRIGGER {TABLE}_search_ad AFTER DELETE ON {TABLE} REFERENCING OLD TABLE AS gone "
    f"FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_search_delete()",
    f"CREATE FUNCTION {TABLE}_search_truncate() RETURNS trigger LANGUAGE plpgsql AS $$ "
    f"BEGIN TRUNCATE {SEARCH}, {QUEUE}; RETURN NULL; END $$",
    f"CREATE TRIGGER {TABLE}_search_at AFTER TRUNCATE ON {TABLE} "
    f"FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_search_truncate()",
    f"INSERT INTO {SEARCH} (id, doc) SELECT id, {SEARCH_DOCUMENT.format(p='')} FROM {TABLE}",
    f"CREATE INDEX audit_search_doc_trgm_idx ON {SEARCH} USING gin (doc gin_trgm_ops)",
    "DROP INDEX IF EXISTS audit_search_trgm_idx",
    # The dropped index's statistics on the document told the planner how common a text is;
    # a search for a common one walks the time index instead of the text index
    # (models.audit._busy_text), and needs these to plan that walk.
    f"CREATE STATISTICS audit_search_doc_stats ON (({SEARCH_DOCUMENT.format(p='')})) FROM {TABLE}",
    f"ANALYZE {TABLE}",
    f"ANALYZE {SEARCH}",
]
BACKWARD = [
    "DROP STATISTICS IF EXISTS audit_search_doc_stats",
    "CREATE INDEX IF NOT EXISTS audit_search_trgm_idx ON registry_admin_auditevent "
    f"USING gin (({SEARCH_DOCUMENT.format(p='')}) gin_trgm_ops)",
    f"DROP TRIGGER IF EXISTS {TABLE}_search_at ON {TABLE}",
    f"DROP TRIGGER IF EXISTS {TABLE}_search_ad ON {TABLE}",
    f"DROP TRIGGER IF EXISTS {TABLE}_search_au ON {TABLE}",
    f"DROP TRIGGER IF EXISTS {TABLE}_search_ai ON {TABLE}",
    f"DROP FUNCTION IF EXISTS {TABLE}_search_truncate()",
    f"DROP FUNCTION IF EXISTS {TABLE}_search_delete()",
    f"DROP FUNCTION IF EXISTS {TABLE}_search_update()",
    f"DROP FUNCTION IF EXISTS {TABLE}_search_queue()",
    f"DROP TABLE IF EXISTS {QUEUE}",
    f"DROP TABLE IF EXISTS {SEARCH}",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for sql in statements:
                schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("registry_admin", "0013_pull_lookback_index")]

    operations = [migrations.RunPython(_run(FORWARD), _run(BACKWARD))]
