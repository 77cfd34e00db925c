"""python manage.py access list | grant USER PATTERN ACTIONS | revoke USER PATTERN | check USER REPO"""

from django.core.management.base import BaseCommand, CommandError

from ... import access
from ...models import AccessGroup, AccessRule, RobotAccount
from ...registry import is_valid_repository
from ...registry_users import cli_actor


class Command(BaseCommand):
    help = (
        "Registry access rules for token mode. USER is a registry user, @group, * (every "
        "registry user) or anonymous; ACTIONS a comma-separated subset of pull,push,delete "
        "(or none, which denies). The most specific pattern wins (see the Access page)."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="Every rule, group and robot account.")
        grant = sub.add_parser("grant", help="Create or replace the rule for USER on PATTERN.")
        grant.add_argument("user")
        grant.add_argument("pattern")
        grant.add_argument("actions")
        revoke = sub.add_parser("revoke", help="Remove the rule for USER on PATTERN.")
        revoke.add_argument("user")
        revoke.add_argument("pattern")
        check = sub.add_parser("check", help="What USER may do on REPOSITORY, and why.")
        check.add_argument("user", help="A registry user name, or anonymous.")
        check.add_argument("repository")

    def handle(self, *args, action, **options):
        if action == "list":
            return self._list()
        if action == "check":
            return self._check(options["user"], options["repository"])
        try:
            if action == "grant":
                rule = access.grant(
                    cli_actor(), options["user"], options["pattern"], options["actions"]
                )
                self.stdout.write(f"{rule.subject}\t{rule.pattern}\t{rule.actions or 'none'}")
            elif not access.revoke(cli_actor(), options["user"], options["pattern"]):
                raise CommandError(
                    f"No rule for {options['user'][:64]!r} on {options['pattern'][:255]!r}."
                )
        except access.AccessError as exc:
            raise CommandError(str(exc)) from None

    def _list(self):
        for rule in AccessRule.objects.all():
            self.stdout.write(f"{rule.subject}\t{rule.pattern}\t{rule.actions or 'none'}")
        for group in AccessGroup.objects.all():
            self.stdout.write(f"# group @{group.name}: {' '.join(group.member_list())}")
        for robot in RobotAccount.objects.all():
            self.stdout.write(
                f"# robot {robot.username} expires {robot.expires_at:%Y-%m-%dT%H:%MZ}"
            )

    def _check(self, user, repository):
        if not is_valid_repository(repository):
            raise CommandError(f"{repository[:80]!r} is not a valid repository name.")
        user = "" if user == "anonymous" else user
        decision = access.decide(access.principal_for(user), repository)
        rules = ", ".join(str(r) for r in decision.rules)
        self.stdout.write(
            f"{','.join(decision.actions) or 'none'}\t{decision.reason}{': ' + rules if rules else ''}"
        )
