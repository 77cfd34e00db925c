# ruff: noqa: S608  (constant SQL built from the constants below; no input reaches it)
"""A real text index for the audit log's free-text search, on each database its own way.

SQLite: an FTS5 table with the trigram tokenizer (SQLite 3.34+) holding one document per event,
kept by triggers; `doc LIKE '%text%'` is answered from the trigram index. PostgreSQL: pg_trgm's
GIN index on the same document as an expression, which `ILIKE '%text%'` uses. The document joins
the searched fields with U+001F, which a search cannot contain (the filter form refuses control
characters), so a match inside the document is a match inside one field, as before.

The document expression is repeated in models/audit.py (SEARCH_DOCUMENT): a migration must not
import code that later changes, and PostgreSQL uses the index only for the very same expression.
"""

from django.db import migrations

SEARCH_DOCUMENT = (
    "{p}repository || chr(31) || {p}tag || chr(31) || {p}digest || chr(31) || {p}actor"
    " || chr(31) || {p}action || chr(31) || {p}event_id || chr(31) || {p}request_id"
    " || chr(31) || {p}request_addr || chr(31) || {p}request_useragent || chr(31) || {p}media_type"
    " || chr(31) || CASE WHEN {p}source = 'portal' THEN {p}raw ELSE '' END"
)
SQLITE_DOCUMENT = SEARCH_DOCUMENT.replace("chr(31)", "char(31)")

SQLITE_FORWARD = [
    "CREATE VIRTUAL TABLE registry_admin_auditevent_search USING fts5(doc, tokenize = 'trigram')",
    "INSERT INTO registry_admin_auditevent_search (rowid, doc) "
    f"SELECT id, {SQLITE_DOCUMENT.format(p='')} FROM registry_admin_auditevent",
    "CREATE TRIGGER registry_admin_auditevent_search_ai AFTER INSERT ON registry_admin_auditevent "
    "BEGIN INSERT INTO registry_admin_auditevent_search (rowid, doc) "
    f"VALUES (new.id, {SQLITE_DOCUMENT.format(p='new.')}); END",
    "CREATE TRIGGER registry_admin_auditevent_search_ad AFTER DELETE ON registry_admin_auditevent "
    "BEGIN DELETE FROM registry_admin_auditevent_search WHERE rowid = old.id; END",
    "CREATE TRIGGER registry_admin_auditevent_search_au AFTER UPDATE ON registry_admin_auditevent "
    "BEGIN DELETE FROM registry_admin_auditevent_search WHERE rowid = old.id; "
    "INSERT INTO registry_admin_auditevent_search (rowid, doc) "
    f"VALUES (new.id, {SQLITE_DOCUMENT.format(p='new.')}); END",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS registry_admin_auditevent_search_au",
    "DROP TRIGGER IF EXISTS registry_admin_auditevent_search_ad",
    "DROP TRIGGER IF EXISTS registry_admin_auditevent_search_ai",
    "DROP TABLE IF EXISTS registry_admin_auditevent_search",
]
POSTGRESQL_FORWARD = [
    # pg_trgm is a trusted extension (PostgreSQL 13+); Azure Database for PostgreSQL needs it
    # allow-listed in the server parameter azure.extensions first.
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS audit_search_trgm_idx ON registry_admin_auditevent "
    f"USING gin (({SEARCH_DOCUMENT.format(p='')}) gin_trgm_ops)",
]
POSTGRESQL_BACKWARD = ["DROP INDEX IF EXISTS audit_search_trgm_idx"]


def _run(statements):
    def run(apps, schema_editor):
        vendor = schema_editor.connection.vendor
        for sql in statements.get(vendor, []):
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("registry_admin", "0007_token_access")]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE_FORWARD, "postgresql": POSTGRESQL_FORWARD}),
            _run({"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRESQL_BACKWARD}),
        )
    ]
