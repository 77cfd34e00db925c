"""Template tags for the portal's pages: the nav's current section and UTC times."""

from datetime import UTC

from django import template
from django.urls import get_script_prefix, reverse
from django.utils.html import format_html

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
