# ruff: noqa: S608  (constant SQL built from the constants below; no input reaches it)
"""Repository pages that stay flat to a million repositories (issue #34).

- `Repository.last_pulled_at`, kept from the pull counters, so "last pull" sorts on an index
  instead of a subquery per repository; filled here from the counters.
- Two indexes per sort with the name as tie-breaker (`-column, name`), one over the
  repositories with tags (partial) and one over all of them, so a page after a cursor is one
  index range even inside a long run of ties (a million repositories with two tags each). The
  old `(is_empty, -column)` indexes served only the first page.
- The header's totals (repositories, empty ones, tags) kept by triggers as rows of deltas in
  `registry_admin_repositorytotals`, which `browse.header_totals()` adds to the folded totals
  (`..._base`, one row: the deltas up to `folded_through` are in it) and now and then folds; a
  read is one primary-key range over the deltas since the last fold, so the dead rows a fold
  leaves (PostgreSQL) are never read. Appending
  a delta instead of updating one row: two transactions changing repositories never wait for
  each other on a shared row (PostgreSQL would otherwise find a deadlock between a repository
  row lock and the totals row). Not a Django model: Django's test flush would otherwise delete
  it in any order against the repository table (SQLite's flush fires the delete trigger); on
  PostgreSQL a TRUNCATE of the repository table empties it too.
- A substring index on repository names: SQLite an FTS5 table with the trigram tokenizer (kept
  by triggers; names never change, a repository is only added or removed), PostgreSQL pg_trgm's
  GIN index on the name, which `LIKE '%text%'` uses.
"""

from django.db import migrations, models
from django.db.models import OuterRef, Subquery

# As in models/index.py when written (a migration must not import code that later changes).
SORT_INDEXES = (
    ("push", "last_push_at"),
    ("size", "total_size"),
    ("tags", "tag_count"),
    ("pull", "last_pulled_at"),
)
REPOSITORY = "registry_admin_repository"
TOTALS = "registry_admin_repositorytotals"
BASE = "registry_admin_repositorytotals_base"
SEARCH = "registry_admin_repository_search"

# (repositories, empty, tags) a row adds to the totals: {p} is new. or old.
SQLITE_ROW = (
    "CASE WHEN {p}is_empty THEN 0 ELSE 1 END, CASE WHEN {p}is_empty THEN 1 ELSE 0 END, {p}tag_count"
)
SQLITE_NEGATED = (
    "CASE WHEN {p}is_empty THEN 0 ELSE -1 END, CASE WHEN {p}is_empty THEN -1 ELSE 0 END, "
    "-{p}tag_count"
)
# The folded totals: one row; the deltas above `folded_through` add to it.
INITIAL_TOTALS = (
    f"INSERT INTO {BASE} (id, folded_through, repositories, empty, tags) "
    "SELECT 1, 0, count(*) FILTER (WHERE NOT is_empty), count(*) FILTER (WHERE is_empty), "
    f"coalesce(sum(tag_count), 0) FROM {REPOSITORY}"
)

SQLITE_FORWARD = [
    # AUTOINCREMENT: ids never come back after a fold deleted the rows (a new delta must land
    # above `folded_through`).
    f"CREATE TABLE {TOTALS} (id integer NOT NULL PRIMARY KEY AUTOINCREMENT, "
    "repositories bigint NOT NULL, empty bigint NOT NULL, tags bigint NOT NULL)",
    f"CREATE TABLE {BASE} (id integer NOT NULL PRIMARY KEY CHECK (id = 1), "
    "folded_through bigint NOT NULL, repositories bigint NOT NULL, empty bigint NOT NULL, "
    "tags bigint NOT NULL)",
    INITIAL_TOTALS,
    f"CREATE TRIGGER {REPOSITORY}_totals_ai AFTER INSERT ON {REPOSITORY} BEGIN "
    f"INSERT INTO {TOTALS} (repositories, empty, tags) VALUES ({SQLITE_ROW.format(p='new.')}); "
    "END",
    f"CREATE TRIGGER {REPOSITORY}_totals_ad AFTER DELETE ON {REPOSITORY} BEGIN "
    f"INSERT INTO {TOTALS} (repositories, empty, tags) "
    f"VALUES ({SQLITE_NEGATED.format(p='old.')}); END",
    f"CREATE TRIGGER {REPOSITORY}_totals_au AFTER UPDATE OF is_empty, tag_count ON {REPOSITORY} "
    "WHEN old.is_empty IS NOT new.is_empty OR old.tag_count IS NOT new.tag_count BEGIN "
    f"INSERT INTO {TOTALS} (repositories, empty, tags) VALUES ("
    "(CASE WHEN new.is_empty THEN 0 ELSE 1 END) - (CASE WHEN old.is_empty THEN 0 ELSE 1 END), "
    "(CASE WHEN new.is_empty THEN 1 ELSE 0 END) - (CASE WHEN old.is_empty THEN 1 ELSE 0 END), "
    "new.tag_count - old.tag_count); END",
    f"CREATE VIRTUAL TABLE {SEARCH} USING fts5(name, tokenize = 'trigram')",
    f"INSERT INTO {SEARCH} (rowid, name) SELECT id, name FROM {REPOSITORY}",
    f"CREATE TRIGGER {REPOSITORY}_search_ai AFTER INSERT ON {REPOSITORY} BEGIN "
    f"INSERT INTO {SEARCH} (rowid, name) VALUES (new.id, new.name); END",
    f"CREATE TRIGGER {REPOSITORY}_search_ad AFTER DELETE ON {REPOSITORY} BEGIN "
    f"DELETE FROM {SEARCH} WHERE rowid = old.id; END",
    # Names do not change today; if one ever does, the index follows.
    f"CREATE TRIGGER {REPOSITORY}_search_au AFTER UPDATE OF name ON {REPOSITORY} BEGIN "
    f"DELETE FROM {SEARCH} WHERE rowid = old.id; "
    f"INSERT INTO {SEARCH} (rowid, name) VALUES (new.id, new.name); END",
]
SQLITE_BACKWARD = [
    f"DROP TRIGGER IF EXISTS {REPOSITORY}_search_au",
    f"DROP TRIGGER IF EXISTS {REPOSITORY}_search_ad",
    f"DROP TRIGGER IF EXISTS {REPOSITORY}_search_ai",
    f"DROP TABLE IF EXISTS {SEARCH}",
    f"DROP TRIGGER IF EXISTS {REPOSITORY}_totals_au",
    f"DROP TRIGGER IF EXISTS {REPOSITORY}_totals_ad",
    f"DROP TRIGGER IF EXISTS {REPOSITORY}_totals_ai",
    f"DROP TABLE IF EXISTS {TOTALS}",
    f"DROP TABLE IF EXISTS {BASE}",
]
POSTGRESQL_FORWARD = [
    f"CREATE TABLE {TOTALS} (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
    "repositories bigint NOT NULL, empty bigint NOT NULL, tags bigint NOT NULL)",
    f"CREATE TABLE {BASE} (id integer NOT NULL PRIMARY KEY CHECK (id = 1), "
    "folded_through bigint NOT NULL, repositories bigint NOT NULL, empty bigint NOT NULL, "
    "tags bigint NOT NULL)",
    INITIAL_TOTALS,
    f"""CREATE FUNCTION {REPOSITORY}_totals() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            DELETE FROM {TOTALS};
            UPDATE {BASE} SET repositories = 0, empty = 0, tags = 0;
            RETURN NULL;
        END IF;
        INSERT INTO {TOTALS} (repositories, empty, tags) VALUES (
            (CASE WHEN TG_OP <> 'DELETE' AND NOT NEW.is_empty THEN 1 ELSE 0 END)
                - (CASE WHEN TG_OP <> 'INSERT' AND NOT OLD.is_empty THEN 1 ELSE 0 END),
            (CASE WHEN TG_OP <> 'DELETE' AND NEW.is_empty THEN 1 ELSE 0 END)
                - (CASE WHEN TG_OP <> 'INSERT' AND OLD.is_empty THEN 1 ELSE 0 END),
            (CASE WHEN TG_OP <> 'DELETE' THEN NEW.tag_count ELSE 0 END)
                - (CASE WHEN TG_OP <> 'INSERT' THEN OLD.tag_count ELSE 0 END)
        );
        RETURN NULL;
    END $$""",
    f"CREATE TRIGGER {REPOSITORY}_totals_aid AFTER INSERT OR DELETE ON {REPOSITORY} "
    f"FOR EACH ROW EXECUTE FUNCTION {REPOSITORY}_totals()",
    f"CREATE TRIGGER {REPOSITORY}_totals_au AFTER UPDATE OF is_empty, tag_count ON {REPOSITORY} "
    "FOR EACH ROW WHEN (OLD.is_empty IS DISTINCT FROM NEW.is_empty "
    "OR OLD.tag_count IS DISTINCT FROM NEW.tag_count) "
    f"EXECUTE FUNCTION {REPOSITORY}_totals()",
    f"CREATE TRIGGER {REPOSITORY}_totals_truncate AFTER TRUNCATE ON {REPOSITORY} "
    f"FOR EACH STATEMENT EXECUTE FUNCTION {REPOSITORY}_totals()",
    # pg_trgm: created by migration 0008 (Azure needs it allow-listed in azure.extensions).
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    f"CREATE INDEX IF NOT EXISTS repository_name_trgm_idx ON {REPOSITORY} "
    "USING gin (name gin_trgm_ops)",
]
POSTGRESQL_BACKWARD = [
    "DROP INDEX IF EXISTS repository_name_trgm_idx",
    f"DROP TRIGGER IF EXISTS {REPOSITORY}_totals_truncate ON {REPOSITORY}",
    f"DROP TRIGGER IF EXISTS {REPOSITORY}_totals_au ON {REPOSITORY}",
    f"DROP TRIGGER IF EXISTS {REPOSITORY}_totals_aid ON {REPOSITORY}",
    f"DROP FUNCTION IF EXISTS {REPOSITORY}_totals()",
    f"DROP TABLE IF EXISTS {TOTALS}",
    f"DROP TABLE IF EXISTS {BASE}",
]


def _run(statements):
    def run(apps, schema_editor):
        for sql in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)

    return run


def fill_last_pulled_at(apps, schema_editor):
    Repository = apps.get_model("registry_admin", "Repository")
    PullCount = apps.get_model("registry_admin", "PullCount")
    newest = (
        PullCount.objects.filter(scope="r", repository=OuterRef("name"), ref="")
        .order_by("-last_pulled_at")
        .values("last_pulled_at")[:1]
    )
    Repository.objects.update(last_pulled_at=Subquery(newest))


class Migration(migrations.Migration):
    dependencies = [("registry_admin", "0015_job_kind_choices")]

    operations = [
        migrations.AddField(
            model_name="repository",
            name="last_pulled_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(fill_last_pulled_at, migrations.RunPython.noop),
        migrations.RemoveIndex(model_name="repository", name="index_repo_push_idx"),
        migrations.RemoveIndex(model_name="repository", name="index_repo_size_idx"),
        migrations.RemoveIndex(model_name="repository", name="index_repo_tags_idx"),
        migrations.AddIndex(
            model_name="repository",
            index=models.Index(fields=["-synced_at"], name="repo_synced_idx"),
        ),
        *(
            migrations.AddIndex(
                model_name="repository",
                index=models.Index(
                    fields=[f"-{column}", "name"],
                    name=f"repo_{short}_order_idx",
                    condition=models.Q(is_empty=False),
                ),
            )
            for short, column in SORT_INDEXES
        ),
        *(
            migrations.AddIndex(
                model_name="repository",
                index=models.Index(fields=[f"-{column}", "name"], name=f"repo_{short}_all_idx"),
            )
            for short, column in SORT_INDEXES
        ),
        migrations.RunPython(
            _run({"sqlite": SQLITE_FORWARD, "postgresql": POSTGRESQL_FORWARD}),
            _run({"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRESQL_BACKWARD}),
        ),
    ]
