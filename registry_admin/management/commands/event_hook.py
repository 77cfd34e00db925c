"""`python manage.py event_hook add NAME URL --format generic|cloudevents|slack|teams
[--events KIND,...] [--repository PATTERN] | list [--json] | remove NAME | test NAME`:
outgoing event hooks from a shell (README "Event hooks")."""

import json

from django.core.management.base import CommandError

from ... import event_hooks
from ...models import EventHook, HookDelivery
from ...registry_users import cli_actor
from ..base import PortalCommand


class Command(PortalCommand):
    help = "Add, list, remove or test the endpoints Oyster sends its events to."
    failures = (event_hooks.HookError,)

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        adding = actions.add_parser(
            "add", help="Add a hook (the generic format's key is printed once)."
        )
        adding.add_argument("name")
        adding.add_argument("url")
        adding.add_argument("--format", required=True, choices=EventHook.Format.values)
        adding.add_argument("--events", default="", metavar="KIND,...")
        adding.add_argument("--repository", default="", metavar="PATTERN")
        listing = actions.add_parser("list", help="The hooks and their queues.")
        listing.add_argument("--json", dest="as_json", action="store_true")
        removing = actions.add_parser("remove", help="Remove a hook and its queue.")
        removing.add_argument("name")
        testing = actions.add_parser("test", help="Queue a test delivery (the worker sends it).")
        testing.add_argument("name")

    def run(self, *, action, **options):
        return getattr(self, f"do_{action}")(**options)

    def do_add(self, *, name, url, format, events="", repository="", **options):
        if len(events) > 200:
            raise CommandError("--events is a short comma-separated list.", returncode=2)
        try:
            hook, secret = event_hooks.save_hook(
                cli_actor(), name, url, format, events.split(","), repository
            )
        except event_hooks.HookError as exc:
            raise CommandError(str(exc), returncode=2) from None
        self.stdout.write(f"Hook {hook.name} added ({hook.get_format_display()}).")
        if secret:
            self.stdout.write(f"Signing key (shown once): {secret}")

    def do_list(self, *, as_json=False, **options):
        rows = []
        for hook in EventHook.objects.all():
            queue = HookDelivery.objects.filter(hook=hook)
            rows.append(
                {
                    "name": hook.name,
                    "endpoint": event_hooks.display_url(hook.url),
                    "format": hook.format,
                    "events": hook.kinds() or ["all"],
                    "repository_pattern": hook.repository_pattern or "all",
                    "pending": queue.filter(state=HookDelivery.State.PENDING).count(),
                    "failed": queue.filter(state=HookDelivery.State.FAILED).count(),
                }
            )
        if as_json:
            self.stdout.write(json.dumps(rows, indent=2, sort_keys=True))
            return
        if not rows:
            self.stdout.write("No event hooks.")
        for row in rows:
            self.stdout.write(
                f"{row['name']}: {row['endpoint']} ({row['format']}), events "
                f"{','.join(row['events'])}, repositories {row['repository_pattern']}; "
                f"{row['pending']} pending, {row['failed']} failed"
            )

    def do_remove(self, *, name, **options):
        if not event_hooks.remove_hook(cli_actor(), name):
            raise CommandError(f"No hook named {name[:64]!r}.", returncode=1)
        self.stdout.write(f"Hook {name} removed.")

    def do_test(self, *, name, **options):
        hook = EventHook.objects.filter(name=name).first() if event_hooks.valid_name(name) else None
        if hook is None:
            raise CommandError(f"No hook named {name[:64]!r}.", returncode=1)
        event_hooks.send_test(hook)
        self.stdout.write(f"A test delivery to {hook.name} is queued; the worker sends it.")
