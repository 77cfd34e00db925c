"""The registry-user actions the Users pages and `manage.py htpasswd` share.

Each action writes its audit row and then changes the htpasswd file, inside one transaction: a
change the database cannot record never reaches the file, and a file change that fails rolls the
row back. Callers say who acted (a portal user's name, or `cli_actor()` for a shell) and catch
`htpasswd.CredentialsError` (the file) and `DatabaseError` (the audit row) for their own message.
"""

import getpass
import os

from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from . import htpasswd
from .models import AuditEvent, PortalAction


def cli_actor():
    """Who ran a management command, as the audit log shows it: `cli:<operating-system user>`."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = f"uid {os.getuid()}"
    return f"cli:{name}"


@sensitive_variables("password")
def create(actor, username, password, **detail):
    _record_and_change(
        actor,
        PortalAction.USER_CREATED,
        username,
        lambda: htpasswd.add_user(username, password),
        detail,
    )


@sensitive_variables("password")
def change_password(actor, username, password, **detail):
    _record_and_change(
        actor,
        PortalAction.USER_PASSWORD_CHANGED,
        username,
        lambda: htpasswd.set_password(username, password),
        detail,
    )


def delete(actor, username, **detail):
    _record_and_change(
        actor, PortalAction.USER_DELETED, username, lambda: htpasswd.delete_user(username), detail
    )


@sensitive_variables("password")
def write_service_account(actor, username, password, **detail):
    """Make the file's service-account entry match `password` (REGISTRY_PASSWORD)."""
    _record_and_change(
        actor,
        PortalAction.USER_PASSWORD_CHANGED,
        username,
        lambda: htpasswd.ensure_service_account(username, password),
        {"service_account": True, **detail},
    )


def rotate_service_account(actor, username, **detail):
    """A new random password for the service account; returns it (shown once by the caller)."""
    passwords = []
    _record_and_change(
        actor,
        PortalAction.USER_PASSWORD_CHANGED,
        username,
        lambda: passwords.append(htpasswd.rotate_service_account(username)),
        {"service_account": True, "generated": True, **detail},
    )
    return passwords[0]


def _record_and_change(actor, action, username, change, detail):
    with transaction.atomic():
        AuditEvent.objects.log_portal_action(
            actor, action, detail={"registry_user": username, **detail}
        )
        change()
