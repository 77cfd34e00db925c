"""Template tags for the portal's pages: the nav's current section, UTC times, a run's ETA."""

from datetime import UTC, timedelta

from django import template
from django.urls import get_script_prefix, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timeuntil

from ..models import Run

register = template.Library()


@register.simple_tag(takes_context=True)
def nav_link(context, view_name, label):
    """A nav link to `view_name`, marked aria-current="page" on every page of its section.

    A section is the URL's first path segment (/repositories/..., /settings/...); the root URL
    (the dashboard) is current only on itself.
    """
    url = reverse(view_name)
    path = context["request"].path
    prefix = get_script_prefix()
    first = url.removeprefix(prefix).split("/", 1)[0]
    current = path.startswith(prefix + first + "/") if first else path == url
    if current:
        return format_html('<a href="{}" aria-current="page">{}</a>', url, label)
    return format_html('<a href="{}">{}</a>', url, label)


@register.simple_tag
def utc_time(value, empty=""):
    """`value` (an aware datetime) as <time> with its ISO instant, shown as UTC minutes; else
    `empty`. strftime here costs a fraction of the `date` filter on a page of many rows."""
    if not value:
        return empty
    value = value.astimezone(UTC)
    return format_html(
        '<time datetime="{}">{}</time>', value.isoformat(), value.strftime("%Y-%m-%d %H:%M")
    )


def seconds_left(run, now=None):
    """Seconds until `run` is done, at the rate of its `done` over the time from its start to
    its last report (the heartbeat), counted from `now`; None while there is nothing to go on
    (not running, no total, nothing done yet, or all done).

    The rate is the whole run's: a job whose counted stage follows uncounted ones (the online
    collector unlinks and moves after its mark) gets a long estimate early in that stage."""
    if run is None or run.state != Run.State.RUNNING or not run.started_at or not run.total:
        return None
    if not run.done or run.done >= run.total:
        return None
    reported = run.heartbeat_at or run.started_at
    elapsed = (reported - run.started_at).total_seconds()
    if elapsed <= 0:
        return None
    left = elapsed * (run.total - run.done) / run.done
    since = ((now or timezone.now()) - reported).total_seconds()
    return max(0, round(left - since))


@register.filter
def eta(run, now=None):
    """ "about 4 minutes left" for a running run with a total, "" when there is nothing to go on
    (see seconds_left)."""
    now = now or timezone.now()
    left = seconds_left(run, now)
    if left is None:
        return ""
    if left < 60:
        return "less than a minute left"
    return f"about {timeuntil(now + timedelta(seconds=left), now)} left"
