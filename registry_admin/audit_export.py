"""The audit log as CSV: the columns, the streamed rows, and the cells a spreadsheet must not
run as formulas. One home for the page's export and the API's."""

import csv
import unicodedata

from django.conf import settings
from django.utils import timezone

# Rows read from the database at a time while streaming.
EXPORT_CHUNK = 2000


def too_many(events):
    """The sentence refusing an export of more than AUDIT_EXPORT_MAX_ROWS events, or "".

    Refused up front rather than cut short: a partial file would pass for the whole log. The cap
    bounds what one request holds a gunicorn thread for (a million rows took 79 s)."""
    cap = settings.AUDIT_EXPORT_MAX_ROWS
    if cap and events.order_by()[cap : cap + 1].exists():
        return (
            f"More than {cap} events match this filter, and one export holds at most {cap} "
            "(AUDIT_EXPORT_MAX_ROWS). Narrow it by date, repository, actor or action, and "
            "export the parts one after another."
        )
    return ""


def file_name():
    return f"oyster-audit-{timezone.now():%Y%m%d-%H%M%S}.csv"


def every_event(events):
    """Every matching event, newest first, from one query read in chunks: a filtered export
    sorts its matches once (keyset batches would sort the remainder again for each batch)."""
    return events.newest_first().defer("raw").iterator(chunk_size=EXPORT_CHUNK)


CSV_COLUMNS = (
    "event_id",
    "timestamp",
    "source",
    "action",
    "kind",
    "is_head",
    "repository",
    "tag",
    "digest",
    "media_type",
    "size",
    "actor",
    "request_id",
    "request_addr",
    "request_host",
    "request_method",
    "request_useragent",
    "from_repository",
    "source_addr",
    "source_instance",
    "received_at",
)


class _Echo:
    def write(self, value):
        return value


def csv_lines(events):
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    for event in events:
        yield writer.writerow([csv_cell(getattr(event, name)) for name in CSV_COLUMNS])


# What a spreadsheet may read as the start of a formula, once compatibility forms are folded
# (NFKC: full-width ＝ and small ﹦ become =, no-break space a space, as some spreadsheets fold).
_FORMULA_SIGNS = frozenset("=+-@|%")
# What it may skip before one: control characters (tab, CR, LF, \x0b, \x0c), invisible format
# characters (zero-width space, BOM) and every space, line and paragraph separator. A list of
# characters would miss the next one; the Unicode categories do not.
_SKIPPED_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def _starts_like_a_formula(text):
    # Character by character: NFKC of the whole text could compose a sign with a combining
    # mark after it (=\u0338 is ≠) that a spreadsheet still reads as =.
    for char in text:
        for folded in unicodedata.normalize("NFKC", char):
            if unicodedata.category(folded) not in _SKIPPED_CATEGORIES:
                return folded in _FORMULA_SIGNS
    return False


def csv_cell(value):
    """A spreadsheet must not run a cell as a formula: text starting like one gets a quote."""
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and _starts_like_a_formula(value):
        return "'" + value
    return value
