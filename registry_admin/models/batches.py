"""Many rows at a time, in slices every supported database accepts in one query."""

# Primary keys per `pk__in` query and rows per bulk insert: SQLite builds before 3.32 take at
# most 999 variables per statement.
BATCH_SIZE = 500


def batched(items, size=BATCH_SIZE):
    """`items` (a sequence) in consecutive slices of `size`; itertools.batched once on 3.12."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def pk_batches(model, pks, size=BATCH_SIZE):
    """Querysets of `model` over `pks`, `size` keys each: call .update() or .delete() on each."""
    for batch in batched(pks, size):
        yield model.objects.filter(pk__in=batch)
