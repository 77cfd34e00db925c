from django.core.management.base import BaseCommand

from ...activity import rebuild


class Command(BaseCommand):
    help = (
        "Recount the dashboard's per-day activity (pushes, pulls, busiest repositories and "
        "users) from the audit log. Run it after changing REGISTRY_USERNAME or TIME_ZONE; the "
        "webhook keeps it current otherwise."
    )

    def handle(self, *args, **options):
        rows = rebuild()
        self.stdout.write(f"Recounted the dashboard's activity from the audit log: {rows} rows.")
