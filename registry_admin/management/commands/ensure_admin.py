import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from ...roles import ADMIN_GROUP


class Command(BaseCommand):
    help = (
        "Create the first portal admin from PORTAL_ADMIN_USERNAME / PORTAL_ADMIN_PASSWORD, "
        "or with a generated password printed once. Does nothing when an admin exists."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", help="Defaults to PORTAL_ADMIN_USERNAME or 'admin'.")

    def handle(self, *args, **options):
        import os

        username = options["username"] or os.environ.get("PORTAL_ADMIN_USERNAME") or "admin"
        password = os.environ.get("PORTAL_ADMIN_PASSWORD", "")
        User = get_user_model()
        try:
            group = Group.objects.get(name=ADMIN_GROUP)
        except Group.DoesNotExist as exc:
            raise CommandError(
                "The admin role is missing: run `python manage.py migrate` first."
            ) from exc
        with transaction.atomic():
            if group.user_set.filter(is_active=True).exists():
                self.stdout.write("An admin exists already; nothing to do.")
                return
            if User.objects.filter(username=username).exists():
                user = User.objects.get(username=username)
                user.groups.add(group)
                self.stdout.write(f"Gave the admin role to the existing account {username!r}.")
                return
            generated = not password
            if generated:
                password = secrets.token_urlsafe(15)
            user = User.objects.create_user(username=username, password=password)
            user.is_staff = True
            user.is_superuser = True
            user.save(update_fields=["is_staff", "is_superuser"])
            user.groups.add(group)
        if generated:
            self.stdout.write(
                f"Created admin {username!r} with the generated password: {password}\n"
                "It is shown only this once; change it after logging in."
            )
        else:
            self.stdout.write(f"Created admin {username!r} with PORTAL_ADMIN_PASSWORD.")
