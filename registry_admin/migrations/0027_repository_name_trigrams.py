# ruff: noqa: S608  (constant SQL built from the constants below; no input reaches it)
"""Repository names kept in name order per trigram (issue #34).

A common search that starts no name (`4/service-`) had its first match in name order found by
walking the name index from the start (120,000 entries at 1,000,000 names). Every name holding
a text of three characters or more is in the list of each of the text's trigrams, and this
table keeps each list in name order (its primary key, `(trigram, name)`): the first page of
matches after a cursor is among the first entries of any one list
(`browse._trigram_page`), found in a list whose names mostly match.

One row per distinct trigram of each name: about 20 per name, so about 21 million rows at a
million names of ~23 characters, 757 MB on SQLite and 2.3 GB on PostgreSQL (heap and primary
key both hold the names); filled here in 57 s and 82 s. Kept by triggers on the repository
table (insert, delete, a name change; PostgreSQL's TRUNCATE too), so a new repository writes
about 20 more index entries in its transaction. SQLite: a WITHOUT ROWID table and a table of
positions 1..253 (a trigger cannot use a recursive CTE); PostgreSQL: a plpgsql trigger with
generate_series, the names compared by code point (`COLLATE "C"`).

Backfilled here from the existing rows, one sorted INSERT ... SELECT; on PostgreSQL the
triggers are created first, which holds off writes to the repository table until the migration
commits (notifications wait, none are lost).
"""

from django.db import migrations

REPOSITORY = "registry_admin_repository"
TRIGRAMS = "registry_admin_repository_trigram"
POSITIONS = "registry_admin_trigram_position"
# A name is at most 255 characters: its trigrams start at positions 1..253.
LAST_POSITION = 253

SQLITE_INSERT = (
    f"INSERT OR IGNORE INTO {TRIGRAMS} (trigram, name) SELECT substr({{n}}, p, 3), {{n}} "
    f"FROM {POSITIONS} WHERE p <= length({{n}}) - 2"
)
SQLITE_DELETE = (
    f"DELETE FROM {TRIGRAMS} WHERE name = {{n}} AND trigram IN "
    f"(SELECT substr({{n}}, p, 3) FROM {POSITIONS} WHERE p <= length({{n}}) - 2)"
)
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER {REPOSITORY}_trigram_ai AFTER INSERT ON {REPOSITORY} BEGIN "
    f"{SQLITE_INSERT.format(n='new.name')}; END",
    f"CREATE TRIGGER {REPOSITORY}_trigram_ad AFTER DELETE ON {REPOSITORY} BEGIN "
    f"{SQLITE_DELETE.format(n='old.name')}; END",
    f"CREATE TRIGGER {REPOSITORY}_trigram_au AFTER UPDATE OF name ON {REPOSITORY} "
    "WHEN old.name IS NOT new.name BEGIN "
    f"{SQLITE_DELETE.format(n='old.name')}; {SQLITE_INSERT.format(n='new.name')}; END",
]
# Sorted, so the rows go into the table's B-tree in key order (appended, not scattered).
SQLITE_BACKFILL = (
    f"INSERT OR IGNORE INTO {TRIGRAMS} (trigram, name) SELECT substr(r.name, p.p, 3), r.name "
    f"FROM {REPOSITORY} r JOIN {POSITIONS} p ON p.p <= length(r.name) - 2 ORDER BY 1, 2"
)
SQLITE_FORWARD = [
    f"CREATE TABLE {POSITIONS} (p integer NOT NULL PRIMARY KEY)",
    f"WITH RECURSIVE n(p) AS (SELECT 1 UNION ALL SELECT p + 1 FROM n WHERE p < {LAST_POSITION}) "
    f"INSERT INTO {POSITIONS} (p) SELECT p FROM n",
    f"CREATE TABLE {TRIGRAMS} (trigram text NOT NULL, name text NOT NULL, "
    "PRIMARY KEY (trigram, name)) WITHOUT ROWID",
    *SQLITE_TRIGGERS,
    SQLITE_BACKFILL,
]
SQLITE_BACKWARD = [
    f"DROP TRIGGER IF EXISTS {REPOSITORY}_trigram_au",
    f"DROP TRIGGER IF EXISTS {REPOSITORY}_trigram_ad",
    f"DROP TRIGGER IF EXISTS {REPOSITORY}_trigram_ai",
    f"DROP TABLE IF EXISTS {TRIGRAMS}",
    f"DROP TABLE IF EXISTS {POSITIONS}",
]

POSTGRESQL_FUNCTION = f"""CREATE FUNCTION {REPOSITORY}_trigrams() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            TRUNCATE {TRIGRAMS};
            RETURN NULL;
        END IF;
        IF TG_OP <> 'INSERT' THEN
            -- An array, not IN (SELECT ...): always the primary key's index, never a join
            -- the planner might choose to run over the whole table.
            DELETE FROM {TRIGRAMS} WHERE name = OLD.name AND trigram = ANY (ARRAY(
                SELECT substr(OLD.name, p, 3) FROM generate_series(1, length(OLD.name) - 2) p));
        END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO {TRIGRAMS} (trigram, name)
            SELECT DISTINCT substr(NEW.name, p, 3), NEW.name
            FROM generate_series(1, length(NEW.name) - 2) p
            ON CONFLICT DO NOTHING;
        END IF;
        RETURN NULL;
    END $$"""
POSTGRESQL_TRIGGERS = [
    f"CREATE TRIGGER {REPOSITORY}_trigram_aid AFTER INSERT OR DELETE ON {REPOSITORY} "
    f"FOR EACH ROW EXECUTE FUNCTION {REPOSITORY}_trigrams()",
    f"CREATE TRIGGER {REPOSITORY}_trigram_au AFTER UPDATE OF name ON {REPOSITORY} "
    "FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name) "
    f"EXECUTE FUNCTION {REPOSITORY}_trigrams()",
    f"CREATE TRIGGER {REPOSITORY}_trigram_truncate AFTER TRUNCATE ON {REPOSITORY} "
    f"FOR EACH STATEMENT EXECUTE FUNCTION {REPOSITORY}_trigrams()",
]
# The primary key is built after the rows are in (one sort instead of a million B-tree inserts).
POSTGRESQL_BACKFILL = [
    f"ALTER TABLE {TRIGRAMS} DROP CONSTRAINT IF EXISTS {TRIGRAMS}_pkey",
    f"INSERT INTO {TRIGRAMS} (trigram, name) SELECT DISTINCT substr(name, p, 3), name "
    f"FROM {REPOSITORY}, generate_series(1, length(name) - 2) p",
    f"ALTER TABLE {TRIGRAMS} ADD CONSTRAINT {TRIGRAMS}_pkey PRIMARY KEY (trigram, name)",
]
POSTGRESQL_FORWARD = [
    f'CREATE TABLE {TRIGRAMS} (trigram text COLLATE "C" NOT NULL, '
    f'name text COLLATE "C" NOT NULL, CONSTRAINT {TRIGRAMS}_pkey PRIMARY KEY (trigram, name))',
    POSTGRESQL_FUNCTION,
    # The triggers first: CREATE TRIGGER locks out writers to the repository table until the
    # migration commits, so the backfill below sees every row and none is added unseen.
    *POSTGRESQL_TRIGGERS,
    *POSTGRESQL_BACKFILL,
]
POSTGRESQL_BACKWARD = [
    f"DROP TRIGGER IF EXISTS {REPOSITORY}_trigram_truncate ON {REPOSITORY}",
    f"DROP TRIGGER IF EXISTS {REPOSITORY}_trigram_au ON {REPOSITORY}",
    f"DROP TRIGGER IF EXISTS {REPOSITORY}_trigram_aid ON {REPOSITORY}",
    f"DROP FUNCTION IF EXISTS {REPOSITORY}_trigrams()",
    f"DROP TABLE IF EXISTS {TRIGRAMS}",
]


def _run(statements):
    def run(apps, schema_editor):
        for sql in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("registry_admin", "0026_repository_name_tail")]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE_FORWARD, "postgresql": POSTGRESQL_FORWARD}),
            _run({"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRESQL_BACKWARD}),
        ),
    ]
