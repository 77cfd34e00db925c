"""The audit log's filters (query parameters shared by the page and the CSV export)."""

import re
from datetime import date, datetime, time, timedelta
from urllib.parse import urlsplit

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from ..models import AuditEvent, PortalAction
from ..models.audit import decode_cursor
from ..references import RegistryAction

HOSTNAME = re.compile(
    r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*|[0-9a-f:.]+"
)

ACTION_SUGGESTIONS = [
    *RegistryAction.values,
    PortalAction.USER_CREATED,
    PortalAction.USER_PASSWORD_CHANGED,
    PortalAction.USER_DELETED,
    PortalAction.TAG_DELETED,
    PortalAction.IMAGE_DELETED,
    PortalAction.RETENTION_RUN,
    PortalAction.UNTAGGED_DELETED,
    PortalAction.GARBAGE_COLLECTED,
    PortalAction.AUDIT_PRUNED,
]


def _text(label, max_length=255, **kwargs):
    return forms.CharField(label=label, required=False, max_length=max_length, **kwargs)


class AuditFilterForm(forms.Form):
    """Every filter is optional; `all` shows blob-level and HEAD events too."""

    error_messages = {
        "control_characters": "Remove the control characters from this filter.",
        "bad_cursor": "That page link is broken; start again from the first page.",
        "date_order": "The start date is after the end date.",
    }

    q = _text("Text", max_length=200, help_text="Searches names, digests, ids, addresses.")
    action = _text("Action", max_length=64)
    kind = forms.ChoiceField(
        label="Kind", required=False, choices=[("", "Any")] + AuditEvent.Kind.choices
    )
    source = forms.ChoiceField(
        label="Source", required=False, choices=[("", "Any")] + AuditEvent.Source.choices
    )
    repository = _text("Repository (prefix)")
    tag = _text("Tag")
    actor = _text("User")
    addr = _text("Client address", help_text="IP address, with or without port.")
    request = _text("Request id")
    since = forms.DateField(label="From", required=False, widget=forms.DateInput({"type": "date"}))
    until = forms.DateField(label="To", required=False, widget=forms.DateInput({"type": "date"}))
    all = forms.BooleanField(label="Show blob-level and HEAD events", required=False)
    after = _text("", max_length=40, widget=forms.HiddenInput)
    before = _text("", max_length=40, widget=forms.HiddenInput)

    def clean(self):
        data = super().clean()
        for name, value in list(data.items()):
            if isinstance(value, str) and any(ord(c) < 32 or ord(c) == 127 for c in value):
                self.add_error(
                    name,
                    ValidationError(
                        self.error_messages["control_characters"], code="control_characters"
                    ),
                )
                continue
            if name in ("after", "before") and value:
                try:
                    data[name] = decode_cursor(value)
                except ValueError:
                    self.add_error(
                        None, ValidationError(self.error_messages["bad_cursor"], code="bad_cursor")
                    )
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            self.add_error(
                "until", ValidationError(self.error_messages["date_order"], code="date_order")
            )
        return data

    def filtered(self, queryset=None, whole=False):
        """The events matching the cleaned filters (no order, no paging); `whole` when all of
        them will be read (the export), not only the newest page."""
        data = self.cleaned_data
        events = queryset if queryset is not None else AuditEvent.objects.all()
        if not data.get("all"):
            events = events.manifest_level()
        exact = {"action": "action", "kind": "kind", "source": "source", "tag": "tag"}
        exact |= {"actor": "actor", "request": "request_id"}
        for param, field in exact.items():
            if data.get(param):
                events = events.filter(**{field: data[param]})
        if data.get("repository"):
            events = events.repository_prefix(data["repository"], whole=whole)
        if data.get("addr"):
            events = events.client_address(data["addr"])
        if data.get("q"):
            events = events.matching_text(data["q"])
        if data.get("since"):
            events = events.filter(timestamp__gte=_start_of(data["since"]))
        if data.get("until") and data["until"] < date.max:
            events = events.filter(timestamp__lt=_start_of(data["until"] + timedelta(days=1)))
        return events


def _start_of(day):
    return timezone.make_aware(datetime.combine(day, time.min))


class NotificationSettingsForm(forms.Form):
    """Options of the registry-side notification config (`registry_config` command and page)."""

    url = forms.CharField(
        label="Portal URL as the registry reaches it",
        max_length=500,
        help_text="The registry POSTs to this URL + /api/registry/events.",
    )
    ignore_blobs = forms.BooleanField(
        label="Leave out blob events (ignore media type application/octet-stream)", required=False
    )
    ignore_pulls = forms.BooleanField(
        label="Leave out every pull (ignore action pull)", required=False
    )

    def clean_url(self):
        # Not Django's URLValidator: it wants a dotted domain, and a registry often reaches the
        # portal by a container or host name such as http://portal:8000.
        url = self.cleaned_data["url"].strip()
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  (raises ValueError for a port that is not a number in range)
        except ValueError:
            parts = None
        if (
            parts is None
            or parts.scheme.lower() not in ("http", "https")
            or not parts.hostname
            or not HOSTNAME.fullmatch(parts.hostname)
            or parts.username is not None
            or parts.query
            or parts.fragment
            or any(c.isspace() or ord(c) < 32 or c in "<>\"'`" for c in url)
        ):
            raise ValidationError(
                "Give an http:// or https:// URL such as https://oyster.example.com or "
                "http://portal:8000.",
                code="invalid_url",
            )
        return url

    def ignore_block(self):
        ignore = {}
        if self.cleaned_data.get("ignore_blobs"):
            ignore["mediatypes"] = ["application/octet-stream"]
        if self.cleaned_data.get("ignore_pulls"):
            ignore["actions"] = [RegistryAction.PULL.value]
        return ignore
