import json

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import filesizeformat

from ...forms.unused import MAX_DAYS
from ...unused import unused_report


class Command(BaseCommand):
    help = (
        "List the tags and repositories whose last real pull (never pulled: their push) is at "
        "least --days old, with the unique bytes each holds (latest storage scan for "
        "repositories, the index's image details for tags) and their monthly cost at "
        "STORAGE_PRICE_PER_GB_MONTH. Images pushed before the portal watched the registry and "
        "not pulled since are listed as 'no data before <date>', never as unused."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days", type=int, required=True, help="Days without a pull (0: every tag)."
        )
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args, **options):
        days = options["days"]
        if not 0 <= days <= MAX_DAYS:
            raise CommandError(f"--days must be between 0 and {MAX_DAYS}.")
        report = unused_report(days)
        if options["json"]:
            self.stdout.write(json.dumps(report.as_json(), indent=2))
            return
        since = report.watching_since
        since_text = f"{since:%Y-%m-%d %H:%M} UTC" if since else "never (no registry event yet)"
        self.stdout.write(
            f"Not pulled for {days} days or more; watching the registry since {since_text}."
        )
        if report.snapshot is None:
            self.stdout.write(
                "No storage scan yet: repository bytes are unknown (manage.py scan_storage)."
            )
        self.stdout.write("")
        self.stdout.write("Repositories:")
        for repo in report.repositories:
            self.stdout.write("  " + _line(repo.name, repo, since))
        self.stdout.write(
            f"  total unused: {_bytes(report.unused_repository_bytes)}, "
            f"{_money(report.unused_repository_cost)} a month"
        )
        self.stdout.write("")
        self.stdout.write("Tags:")
        for tag in report.tags:
            self.stdout.write("  " + _line(f"{tag.repository}:{tag.tag}", tag, since))


def _line(name, row, since):
    if row.status == "no_data":
        when = f"no data before {since:%Y-%m-%d}" if since else "no data"
    elif row.last_pulled:
        when = f"last pulled {row.last_pulled:%Y-%m-%d %H:%M}"
    else:
        when = f"never pulled, pushed {row.pushed:%Y-%m-%d %H:%M}"
    return f"{name}\t{when}\t{_bytes(row.unique_bytes)}\t{_money(row.monthly_cost)}/month"


def _bytes(size):
    return "?" if size is None else f"{filesizeformat(size)} ({size} bytes)"


def _money(value):
    return "?" if value is None else f"{value:.4f}"
