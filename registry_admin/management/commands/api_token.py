"""python manage.py api_token create USER --scope read,delete [--expires DAYS] [--name N]
| list [USER] | revoke PREFIX"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from ... import api_tokens
from ...models import ApiToken
from ...registry_users import cli_actor


class Command(BaseCommand):
    help = (
        "API tokens for /api/v1/. `create` prints only the token, once, on stdout (for scripts); "
        f"scopes are a comma-separated subset of {','.join(api_tokens.SCOPES)} that the user's "
        "role allows."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Make a token for USER; prints it on stdout.")
        create.add_argument("user")
        create.add_argument("--scope", required=True, help="e.g. read,delete")
        create.add_argument(
            "--expires",
            type=int,
            default=api_tokens.DEFAULT_DAYS,
            metavar="DAYS",
            help=f"days it lasts, 1 to {api_tokens.MAX_DAYS} (default {api_tokens.DEFAULT_DAYS})",
        )
        create.add_argument("--name", default="", help="what it is for (default: cli)")
        listing = sub.add_parser("list", help="PREFIX, owner, name, scopes, expiry, last use.")
        listing.add_argument("user", nargs="?")
        revoke = sub.add_parser("revoke", help="Revoke the token with this PREFIX.")
        revoke.add_argument("prefix")

    def handle(self, *args, action, **options):
        if action == "create":
            owner = self._user(options["user"])
            try:
                _, text = api_tokens.create(
                    cli_actor(),
                    owner,
                    options["name"] or "cli",
                    options["scope"],
                    options["expires"],
                )
            except api_tokens.TokenError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(text)
        elif action == "list":
            tokens = ApiToken.objects.select_related("owner").order_by("owner__username", "pk")
            if options["user"]:
                tokens = tokens.filter(owner=self._user(options["user"]))
            for token in tokens:
                state = (
                    "revoked" if token.revoked_at else f"expires {token.expires_at:%Y-%m-%dT%H:%MZ}"
                )
                used = f"{token.last_used_at:%Y-%m-%dT%H:%MZ}" if token.last_used_at else "never"
                self.stdout.write(
                    f"{token.prefix}\t{token.owner.get_username()}\t{token.name}\t"
                    f"{token.scopes}\t{state}\tlast used {used}"
                )
        else:
            token = api_tokens.find(None, options["prefix"])
            if token is None:
                raise CommandError(f"No token with the prefix {options['prefix'][:16]!r}.")
            if not api_tokens.revoke(cli_actor(), token):
                raise CommandError(f"The token {token.prefix} was already revoked.")

    @staticmethod
    def _user(name):
        user = get_user_model().objects.filter(username=name[:150]).first()
        if user is None:
            raise CommandError(f"No portal account {name[:150]!r}.")
        return user
