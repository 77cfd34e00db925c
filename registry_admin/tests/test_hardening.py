"""Issue #14's smaller holes, each tried with the request that showed it."""

import re

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from registry_admin.models import Run

from .factories import make_user


@pytest.mark.django_db
def test_the_generic_run_endpoint_never_starts_a_real_retention_run(admin_client):
    """Item 7: `POST /runs/retention/request` used to queue a real (deleting) run, unconfirmed."""
    response = admin_client.post("/runs/retention/request", {"next": "/retention/"})
    assert response.status_code == 302
    (run,) = Run.objects.filter(kind="retention")
    assert run.options == {"dry_run": True}
    messages = [str(m) for m in response.wsgi_request._messages]
    assert any("dry run, deletes nothing" in m for m in messages)


def _runner_client():
    """An account with exactly the view and run-jobs permissions, as an operator would grant."""
    user = make_user("runner")
    user.user_permissions.add(
        Permission.objects.get(codename="view_portal"),
        Permission.objects.get(codename="run_jobs"),
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_run_jobs_permission_alone_cannot_start_retention():
    """Item 7: retention needs the delete permission, not just run-jobs."""
    client = _runner_client()
    assert client.post("/runs/noop/request").status_code == 302
    assert client.post("/runs/retention/request").status_code == 403
    assert not Run.objects.filter(kind="retention").exists()


@pytest.mark.django_db
def test_the_confirmed_real_run_still_works_from_the_retention_page(admin_client):
    admin_client.post(reverse("registry_admin:retention-run"), {"confirm": "yes"})
    (run,) = Run.objects.filter(kind="retention")
    assert run.options == {"dry_run": False}


# --- Audit CSV export (item 8) --------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "actor",
    [
        " =1+1",
        "\n=cmd()",
        "\t=x",
        '＝HYPERLINK("http://evil")',
        "＋1",
        "－1",
        "＠SUM(A1)",
        "｜x",
        "％x",
        "\u3000=x",
    ],
)
def test_the_export_neutralises_formulas_hidden_behind_space_newline_or_full_width(
    viewer_client, actor
):
    from .test_audit_views import EXPORT, read_csv, store

    store(0, actor=actor, repository="csv/app")
    (row,) = read_csv(viewer_client.get(EXPORT, {"repository": "csv/"}))
    assert row["actor"] == "'" + actor


@pytest.mark.django_db
@pytest.mark.parametrize(
    "lead",
    [
        "\u00a0",  # no-break space
        "\u200b",  # zero-width space
        "\ufeff",  # byte order mark
        "\x0b",  # vertical tab
        "\x0c",  # form feed
        "\u2028",  # line separator
        "\u2029",  # paragraph separator
        "\u00a0\u200b\ufeff ",  # several of them
    ],
)
def test_the_export_neutralises_formulas_behind_invisible_or_unusual_spaces(viewer_client, lead):
    """Issue #27 item 10: these leading characters escaped the guard."""
    from .test_audit_views import EXPORT, read_csv, store

    actor = lead + '=HYPERLINK("http://evil")'
    store(0, actor=actor, repository="csv/app")
    (row,) = read_csv(viewer_client.get(EXPORT, {"repository": "csv/"}))
    assert row["actor"] == "'" + actor


@pytest.mark.django_db
@pytest.mark.parametrize("sign", ["\ufe66", "\ufe62", "\ufe63", "\ufe6b", "\ufe6a"])
def test_the_export_neutralises_signs_that_fold_to_a_formula_sign(viewer_client, sign):
    """Item 10: small ﹦ ﹢ ﹣ ﹫ ﹪ are =, +, -, @, % once NFKC-normalised."""
    from .test_audit_views import EXPORT, read_csv, store

    store(0, actor=sign + "1+1", repository="csv/app")
    (row,) = read_csv(viewer_client.get(EXPORT, {"repository": "csv/"}))
    assert row["actor"] == "'" + sign + "1+1"


@pytest.mark.parametrize("text", ["alice", "\u200balice", "\u00a0bob", "1=1", "", "é=x"])
def test_text_that_does_not_start_like_a_formula_is_left_alone(text):
    from registry_admin.audit_export import csv_cell as _csv_cell

    assert _csv_cell(text) == text


@pytest.mark.django_db
def test_an_export_larger_than_the_cap_is_refused_with_a_message(viewer_client, settings):
    """Item 8: a viewer could hold every gunicorn thread with a few million-row exports."""
    from .test_audit_views import EXPORT, read_csv, store

    settings.AUDIT_EXPORT_MAX_ROWS = 3
    for minute in range(4):
        store(minute, repository="cap/app")
    response = viewer_client.get(EXPORT, {"repository": "cap/", "all": "1"})
    assert response.status_code == 400
    assert b"More than 3 events match this filter" in response.content
    assert b"AUDIT_EXPORT_MAX_ROWS" in response.content
    settings.AUDIT_EXPORT_MAX_ROWS = 4
    assert len(read_csv(viewer_client.get(EXPORT, {"repository": "cap/", "all": "1"}))) == 4


# --- The registry's log (item 8) ------------------------------------------------------------------


@pytest.mark.live
def test_the_generated_registry_config_keeps_the_notification_token_out_of_its_log(tmp_path):
    """Debian's registry 2.8.2 at `info` logs the endpoint's headers, token included, on start;
    the generated config (also what `make run` starts) logs at `warn`, which does not."""
    import time

    from registry_admin.registry_config import local_registry_config

    from .harness import NOTIFICATIONS_TOKEN, start_registry

    reg = start_registry(tmp_path / "registry", "http://127.0.0.1:9")
    try:
        time.sleep(0.5)
        assert NOTIFICATIONS_TOKEN not in reg.log_path.read_text()
        config = local_registry_config(
            listen=f"127.0.0.1:{reg.port}",
            storage_root=reg.storage_root,
            htpasswd_path=reg.htpasswd_path,
            portal_url="http://127.0.0.1:9",
            token=NOTIFICATIONS_TOKEN,
        )
        assert config["log"]["level"] == "warn"
        # The same registry at info does write it: the level is what keeps it out.
        config["log"]["level"] = "info"
        reg.restart(config)
        time.sleep(0.5)
        assert f"Bearer {NOTIFICATIONS_TOKEN}" in reg.log_path.read_text()
    finally:
        reg.stop()


# --- The "wrong token" alarm (item 8) -------------------------------------------------------------


def _refused_delivery(client, event_id, authorization="Bearer not-the-token"):
    from .factories import make_envelope, make_registry_event

    return client.post(
        reverse("registry_admin:registry-events"),
        data=make_envelope(make_registry_event(event_id=event_id)),
        content_type="application/vnd.docker.distribution.events.v1+json",
        HTTP_AUTHORIZATION=authorization,
    )


def _alarm_on(admin_client, settings):
    from .harness import free_port

    settings.REGISTRY_URL = f"http://127.0.0.1:{free_port()}"
    return 'data-warning="wrong-token"' in admin_client.get("/").content.decode()


@pytest.mark.django_db
def test_one_anonymous_post_with_a_wrong_token_raises_no_alarm(admin_client, settings):
    stranger = Client()
    assert _refused_delivery(stranger, "forged-1").status_code == 401
    assert not _alarm_on(admin_client, settings)
    # Nor do one-off posts with a new event id each, or no envelope at all.
    _refused_delivery(stranger, "forged-2")
    stranger.post(
        reverse("registry_admin:registry-events"),
        data=b"x" * 100_000,
        content_type="text/plain",
        HTTP_AUTHORIZATION="Bearer nope",
    )
    assert not _alarm_on(admin_client, settings)


@pytest.mark.django_db
def test_the_registry_retrying_one_event_with_a_wrong_token_raises_the_alarm(
    admin_client, settings
):
    registry = Client()
    for _ in range(3):  # the registry's `threshold` retries of the same event
        assert _refused_delivery(registry, "evt-retried").status_code == 401
    assert _alarm_on(admin_client, settings)


@pytest.mark.django_db
def test_two_posts_of_one_event_id_with_a_wrong_token_do_not_blame_the_registry(
    admin_client, settings
):
    """Issue #27 item 11: two POSTs anyone can send made the dashboard say "the registry is
    sending notifications with a wrong token". Nothing an outsider cannot produce cheaply tells
    the registry from a stranger, so the warning says both are possible."""
    stranger = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(2):
        assert _refused_delivery(stranger, "forged-twice").status_code == 401
    assert _alarm_on(admin_client, settings)
    page = " ".join(admin_client.get("/").content.decode().split())
    assert "The registry is sending notifications with a wrong token" not in page
    assert "the registry's token may be out of date, or someone is guessing it" in page
    assert "If that address is the registry's, its queue is blocked" in page
    assert "203.0.113.9" in page


# --- Content-Security-Policy and Cache-Control (item 8) ---------------------------------------------


def test_no_template_carries_an_inline_script_style_or_handler():
    """The policy forbids them; the browser test proves the pages it visits, this every template."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "templates"
    offenders = []
    for path in root.rglob("*.html"):
        text = path.read_text()
        inline_scripts = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", text)
        # json_script renders <script type="application/json">: data a browser never runs.
        if (
            [s for s in inline_scripts if "application/json" not in s]
            or re.search(r"<style\b|\sstyle=|\son[a-z]+=", text)
            or "javascript:" in text
        ):
            offenders.append(str(path.relative_to(root)))
    assert offenders == []


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/login/", "/no-such-page/", "/healthz", "/api/registry/events"])
def test_every_response_carries_the_policy_without_unsafe_inline(client, path):
    from registry_admin.middleware import CONTENT_SECURITY_POLICY

    response = client.get(path)
    policy = response["Content-Security-Policy"]
    assert policy == CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "script-src 'self'" in policy and "style-src 'self'" in policy


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["/", "/users/", "/audit/", "/audit/export.csv", "/retention/", "/django-admin/"]
)
def test_pages_for_a_logged_in_user_are_never_cached(admin_client, settings, path):
    from .harness import free_port

    settings.REGISTRY_URL = f"http://127.0.0.1:{free_port()}"
    response = admin_client.get(path)
    cache_control = {part.strip() for part in response["Cache-Control"].split(",")}
    assert {"private", "no-store"} <= cache_control
    assert "Content-Security-Policy" in response


# --- Issue #27: the generic run endpoint and the deleting kinds -------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["prune_untagged", "garbage_collect", "retention"])
def test_run_jobs_alone_cannot_start_a_deleting_kind_from_the_generic_endpoint(kind):
    """Issue #27 item 5: `POST /runs/prune_untagged/request` with run-jobs alone queued a real
    prune, while the storage page's own prune answers 403 to the same account."""
    client = _runner_client()
    assert client.post(f"/runs/{kind}/request").status_code == 403
    assert (
        client.post(reverse("registry_admin:untagged-prune"), {"confirm": "yes"}).status_code == 403
    )
    assert not Run.objects.filter(kind=kind).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["prune_untagged", "garbage_collect", "retention"])
def test_an_admin_gets_only_a_dry_run_of_a_deleting_kind_from_the_generic_endpoint(
    admin_client, kind
):
    """Item 5: the confirmation pages are the only way to a real run, for admins too."""
    response = admin_client.post(f"/runs/{kind}/request", {"next": "/storage/"})
    assert response.status_code == 302
    (run,) = Run.objects.filter(kind=kind)
    assert run.options == {"dry_run": True}
    messages = [str(m) for m in response.wsgi_request._messages]
    assert any("dry run, deletes nothing" in m for m in messages)


def test_every_job_kind_is_decided_for_the_generic_endpoint():
    """A new kind must be put in one set or the other (a kind in neither is dry-run only)."""
    from registry_admin import worker
    from registry_admin.views import runs

    assert set(worker.JOBS) == runs.DRY_RUN_ONLY | runs.ANY_RUN
    assert not runs.DRY_RUN_ONLY & runs.ANY_RUN


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["sync", "storage_scan", "audit_prune", "details"])
def test_run_jobs_alone_still_starts_the_kinds_that_delete_nothing(kind):
    client = _runner_client()
    assert client.post(f"/runs/{kind}/request").status_code == 302
    (run,) = Run.objects.filter(kind=kind)
    assert run.options == {}
