"""registry_admin.templatetags.oyster: the nav's current section and UTC times."""

from datetime import UTC, datetime, timedelta, timezone

from django.template import Context, Template
from django.test import RequestFactory
from django.urls import clear_script_prefix, set_script_prefix


def nav(path, view_name="registry_admin:repositories", label="Repositories"):
    request = RequestFactory().get(path)
    template = Template("{% load oyster %}{% nav_link view_name label %}")
    return template.render(Context({"request": request, "view_name": view_name, "label": label}))


def test_a_section_link_is_current_on_every_page_below_it():
    assert nav("/repositories/") == '<a href="/repositories/" aria-current="page">Repositories</a>'
    assert 'aria-current="page"' in nav("/repositories/team/app/-/tags/v1/")
    assert nav("/retention/") == '<a href="/repositories/">Repositories</a>'
    # Another section that merely starts with the same letters is not this one.
    assert "aria-current" not in nav("/repositories-old/")


def test_the_dashboard_is_current_only_on_itself():
    assert 'aria-current="page"' in nav("/", "registry_admin:dashboard", "Dashboard")
    assert "aria-current" not in nav("/users/", "registry_admin:dashboard", "Dashboard")


def test_settings_is_current_on_its_pages():
    assert 'aria-current="page"' in nav(
        "/settings/notifications/", "registry_admin:notification-settings", "Settings"
    )


def test_under_a_script_prefix_only_the_section_is_current():
    set_script_prefix("/portal/")
    try:
        assert 'aria-current="page"' in nav("/portal/storage/", "registry_admin:storage", "Storage")
        assert "aria-current" not in nav("/portal/storage/")
        assert "aria-current" not in nav("/portal/", "registry_admin:storage", "Storage")
    finally:
        clear_script_prefix()


def test_labels_are_escaped():
    assert "&lt;b&gt;" in nav("/", "registry_admin:users", "<b>")


def render_time(value, empty=""):
    return Template("{% load oyster %}{% utc_time value empty %}").render(
        Context({"value": value, "empty": empty})
    )


def test_utc_time_shows_minutes_in_utc_with_the_instant():
    berlin = datetime(2026, 3, 1, 1, 30, 59, tzinfo=timezone(timedelta(hours=1)))
    assert render_time(berlin) == (
        '<time datetime="2026-03-01T00:30:59+00:00">2026-03-01 00:30</time>'
    )
    assert render_time(datetime(2026, 1, 2, 3, 4, tzinfo=UTC)).endswith(">2026-01-02 03:04</time>")


def test_utc_time_of_nothing_is_the_fallback():
    assert render_time(None) == ""
    assert render_time("", "—") == "—"
