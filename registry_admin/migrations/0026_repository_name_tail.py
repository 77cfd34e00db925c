# ruff: noqa: S608  (constant SQL built from the constants below; no input reaches it)
"""A substring index on repository names without their first character (issue #34).

A search such as `team-9/` is most often the start of the names it finds. Those come in name
order from the name's B-tree (one range, read only as far as the page); the names that contain
the text elsewhere are exactly those whose name without its first character contains it, which
this index finds however many names start with it (`browse._prefix_page`).

SQLite: an FTS5 table with the trigram tokenizer over `substr(name, 2)`, kept by triggers like
0016's name index. PostgreSQL: pg_trgm's GIN index on `substr(name, 2)`.

Built from the existing rows: about half a minute per million repositories, during which
PostgreSQL's CREATE INDEX holds off writes to the repository table (notifications wait).
"""

from django.db import migrations

REPOSITORY = "registry_admin_repository"
TAIL = "registry_admin_repository_tail"

SQLITE_FORWARD = [
    f"CREATE VIRTUAL TABLE {TAIL} USING fts5(tail, tokenize = 'trigram')",
    f"INSERT INTO {TAIL} (rowid, tail) SELECT id, substr(name, 2) FROM {REPOSITORY}",
    f"CREATE TRIGGER {REPOSITORY}_tail_ai AFTER INSERT ON {REPOSITORY} BEGIN "
    f"INSERT INTO {TAIL} (rowid, tail) VALUES (new.id, substr(new.name, 2)); END",
    f"CREATE TRIGGER {REPOSITORY}_tail_ad AFTER DELETE ON {REPOSITORY} BEGIN "
    f"DELETE FROM {TAIL} WHERE rowid = old.id; END",
    f"CREATE TRIGGER {REPOSITORY}_tail_au AFTER UPDATE OF name ON {REPOSITORY} BEGIN "
    f"DELETE FROM {TAIL} WHERE rowid = old.id; "
    f"INSERT INTO {TAIL} (rowid, tail) VALUES (new.id, substr(new.name, 2)); END",
]
SQLITE_BACKWARD = [
    f"DROP TRIGGER IF EXISTS {REPOSITORY}_tail_au",
    f"DROP TRIGGER IF EXISTS {REPOSITORY}_tail_ad",
    f"DROP TRIGGER IF EXISTS {REPOSITORY}_tail_ai",
    f"DROP TABLE IF EXISTS {TAIL}",
]
POSTGRESQL_FORWARD = [
    # pg_trgm: created by migration 0008 / 0016.
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    f"CREATE INDEX IF NOT EXISTS repository_name_tail_trgm_idx ON {REPOSITORY} "
    "USING gin (substr(name, 2) gin_trgm_ops)",
]
POSTGRESQL_BACKWARD = ["DROP INDEX IF EXISTS repository_name_tail_trgm_idx"]


def _run(statements):
    def run(apps, schema_editor):
        for sql in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("registry_admin", "0025_referrers")]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE_FORWARD, "postgresql": POSTGRESQL_FORWARD}),
            _run({"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRESQL_BACKWARD}),
        ),
    ]
