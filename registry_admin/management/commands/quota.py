"""`python manage.py quota set PATTERN SIZE [--warn PERCENT] | list [--json] | remove PATTERN`:
storage quotas from a shell (README "Quotas"). SIZE is bytes or a number with a unit (500MB,
20GB, 1.5TiB; decimal and binary units)."""

import json

from django.core.management.base import CommandError
from django.template.defaultfilters import filesizeformat

from ... import quotas
from ...models import Quota
from ...registry_users import cli_actor
from ..base import PortalCommand


class Command(PortalCommand):
    help = "Set, list or remove storage quotas on repository patterns."
    failures = (quotas.QuotaError,)

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        setting = actions.add_parser("set", help="Create or change the quota on a pattern.")
        setting.add_argument("pattern", metavar="PATTERN")
        setting.add_argument("size", metavar="SIZE")
        setting.add_argument("--warn", metavar="PERCENT", default=None)
        listing = actions.add_parser("list", help="Every quota with its usage.")
        listing.add_argument(
            "--json", dest="as_json", action="store_true", help="One JSON document."
        )
        removing = actions.add_parser("remove", help="Remove the quota on a pattern.")
        removing.add_argument("pattern", metavar="PATTERN")

    def run(self, *, action, **options):
        return getattr(self, f"do_{action}")(**options)

    def do_set(self, *, pattern, size, warn=None, **options):
        try:
            quota = quotas.set_quota(cli_actor(), pattern, size, warn)
        except quotas.QuotaError as exc:
            raise CommandError(str(exc), returncode=2) from None
        self.stdout.write(
            f"Quota on {quota.pattern}: {filesizeformat(quota.limit_bytes)} "
            f"({quota.limit_bytes:,} bytes), warning at {quota.warn_percent} %; "
            f"in use {_usage(quota)}."
        )

    def do_list(self, *, as_json=False, **options):
        rows = list(Quota.objects.all())
        if as_json:
            self.stdout.write(json.dumps([as_dict(q) for q in rows], indent=2, sort_keys=True))
            return
        if not rows:
            self.stdout.write("No quotas.")
        for quota in rows:
            self.stdout.write(
                f"{quota.pattern}: {_usage(quota)} of {filesizeformat(quota.limit_bytes)} "
                f"({quota.percent} %) [{quota.level}]"
            )

    def do_remove(self, *, pattern, **options):
        if not quotas.remove_quota(cli_actor(), pattern):
            raise CommandError(f"No quota on {str(pattern)[:80]!r}.", returncode=1)
        self.stdout.write(f"Quota on {pattern} removed.")


def _usage(quota):
    text = f"{filesizeformat(quota.usage_bytes)} ({quota.usage_bytes:,} bytes)"
    return text + (", partial: no storage scan yet" if quota.is_partial else "")


def as_dict(quota):
    return {
        "pattern": quota.pattern,
        "limit_bytes": quota.limit_bytes,
        "warn_percent": quota.warn_percent,
        "usage_bytes": quota.usage_bytes,
        "partial": quota.is_partial,
        "scanned_bytes": quota.scanned_bytes,
        "pushed_bytes": quota.pushed_bytes,
        "freed_bytes": quota.freed_bytes,
        "level": quota.level,
        "scanned_since": quota.scanned_since.isoformat() if quota.scanned_since else None,
    }
