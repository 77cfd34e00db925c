from django.db import connection, models


class MetricCounterManager(models.Manager):
    def add(self, amounts):
        """Add `amounts` ({name: number}) to the named counters in one statement (an upsert
        that adds), creating the rows it needs. Call it inside the transaction of what is
        counted when there is one, so a rolled-back change is not counted; database errors
        propagate."""
        rows = [{"name": name, "value": float(n)} for name, n in amounts.items() if n]
        if not rows:
            return
        # Sorted: two transactions adding to the same rows lock them in one order (PostgreSQL).
        rows.sort(key=lambda row: row["name"])
        table = connection.ops.quote_name(self.model._meta.db_table)
        placeholders = ", ".join(["(%s, %s)"] * len(rows))
        params = [value for row in rows for value in (row["name"], row["value"])]
        # Constant SQL: only the table's own name is formatted in, every value is a parameter.
        sql = (
            f"INSERT INTO {table} (name, value) VALUES {placeholders} "  # noqa: S608
            f"ON CONFLICT (name) DO UPDATE SET value = {table}.value + excluded.value"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


class MetricCounter(models.Model):
    """A running total for `/metrics` (registry_admin/metrics.py), one row per name, e.g.
    `job_runs:sync:done` or `token_requests:issued`: only ever added to, so every portal
    process and instance answers a scrape with the same, never-decreasing value.

    Kept for what no other table holds for ever: the per-day tables and the audit log are
    pruned, and counting the audit log would cost a scan of a million rows per scrape.
    """

    name = models.CharField(max_length=200, primary_key=True)
    # A float: counts and summed seconds alike (exact for counts below 2**53).
    value = models.FloatField(default=0)

    objects = MetricCounterManager()

    def __str__(self):
        return f"{self.name}: {self.value:g}"
