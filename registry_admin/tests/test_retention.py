"""Retention rules: the plan (dry run), the real run on the real registry, the pages and the job."""

import io
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from registry_admin import image_details, index, reconcile, registry, retention, worker
from registry_admin.models import (
    AuditEvent,
    BinItem,
    Manifest,
    PortalAction,
    RetentionRule,
    Tag,
)

from . import harness
from .images import build_image

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def make_rule(**fields):
    defaults = {"name": f"rule-{uuid.uuid4().hex[:6]}", "repository_pattern": "*", "position": 100}
    rule = RetentionRule(**{**defaults, **fields})
    rule.full_clean()
    rule.save()
    return rule


def index_tag(repo, tag, created=None, pushed_at=NOW, digest=None):
    digest = digest or "sha256:" + uuid.uuid4().hex * 2
    index.upsert_tag(repo, tag, digest, pushed_at)
    if created is not None:
        Manifest.objects.filter(digest=digest).update(created=created)
    return digest


def decisions_of(plan, repo):
    for rule_plan in plan.rules:
        for repo_plan in rule_plan.repositories:
            if repo_plan.repository == repo:
                return {d.tag: d for d in repo_plan.decisions}
    return None


# --- The plan, on index rows only ------------------------------------------------------------


@pytest.mark.django_db
def test_keep_newest_keep_regex_and_age_combine_as_documented():
    rule = make_rule(
        repository_pattern="team/*",
        keep_latest=2,
        keep_regex=r"latest|v\d+",
        delete_older_than_days=10,
    )
    for days, tag in ((1, "n1"), (2, "n2"), (3, "n3"), (20, "old1"), (30, "old2"), (40, "v1")):
        index_tag("team/app", tag, created=NOW - timedelta(days=days))
    index_tag("team/app", "latest", created=NOW - timedelta(days=90))

    got = decisions_of(retention.build_plan([rule], now=NOW), "team/app")

    assert {t for t, d in got.items() if d.deletes} == {"old1", "old2"}
    assert got["n1"].reason == "#1 newest, within the 2 kept"
    assert got["n3"].reason == "3 days old, not older than 10 days"
    assert got["v1"].reason == r"matches the keep regex latest|v\d+"
    assert got["latest"].action == retention.KEEP
    assert got["old2"].reason == "#5 newest, beyond the 2 kept; 30 days old, older than 10 days"
    assert got["old1"].age_source == "image created"


@pytest.mark.django_db
def test_the_keep_regex_must_match_the_whole_tag():
    rule = make_rule(keep_latest=0, keep_regex="v1")
    index_tag("r/a", "v1", created=NOW)
    index_tag("r/a", "v10", created=NOW)
    got = decisions_of(retention.build_plan([rule], now=NOW), "r/a")
    assert (got["v1"].action, got["v10"].action) == (retention.KEEP, retention.DELETE)


@pytest.mark.django_db
def test_ages_fall_back_to_the_push_time_and_unknown_ages_are_kept():
    rule = make_rule(delete_older_than_days=5)
    # A reproducible build stamps 1970: the push time says more.
    index_tag("r/b", "repro", created=datetime(1970, 1, 1, tzinfo=UTC), pushed_at=NOW)
    index_tag("r/b", "nodetail", created=None, pushed_at=NOW - timedelta(days=9))
    digest = index_tag("r/b", "unknown", created=None)
    Tag.objects.filter(digest=digest).update(pushed_at=None)

    got = decisions_of(retention.build_plan([rule], now=NOW), "r/b")

    assert (got["repro"].action, got["repro"].age_source) == (retention.KEEP, "pushed")
    assert (got["nodetail"].action, got["nodetail"].age_source) == (retention.DELETE, "pushed")
    assert got["unknown"].action == retention.KEEP
    assert got["unknown"].reason.startswith("age unknown")


@pytest.mark.django_db
def test_tags_of_one_image_get_a_fixed_order():
    rule = make_rule(keep_latest=1)
    digest = index_tag("r/c", "b", created=NOW - timedelta(days=3))
    for tag in ("c", "a"):
        index_tag("r/c", tag, digest=digest)
    got = decisions_of(retention.build_plan([rule], now=NOW), "r/c")
    assert [t for t, d in got.items() if not d.deletes] == ["a"]


@pytest.mark.django_db
def test_the_first_matching_rule_governs_a_repository():
    first = make_rule(name="teams", repository_pattern="team/*", position=1, keep_latest=5)
    everything = make_rule(name="all", repository_pattern="*", position=2, keep_latest=0)
    make_rule(name="off", repository_pattern="*", position=0, keep_latest=0, enabled=False)
    index_tag("team/app", "x", created=NOW)
    index_tag("solo", "x", created=NOW)

    plan = retention.build_plan(now=NOW)

    assert [r.rule.name for r in plan.rules] == ["teams", "all"]
    assert decisions_of(plan, "team/app")["x"].action == retention.KEEP
    assert decisions_of(plan, "solo")["x"].action == retention.DELETE
    assert plan.rules[1].shadowed == [("team/app", first.name)]
    assert everything.matches_repository("team/app")


# --- Rule validation --------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields,code",
    [
        ({"keep_regex": "(unclosed"}, "invalid_regex"),
        # RE2 runs in linear time but has no look-around or back-references.
        ({"keep_regex": "(?=v)v1"}, "invalid_regex"),
        ({"keep_regex": r"(a)\1"}, "invalid_regex"),
        ({"keep_regex": "a{1001}"}, "invalid_regex"),
        ({"keep_regex": "a" * 201}, "max_length"),
        ({"repository_pattern": "../*"}, "invalid_pattern"),
        ({"repository_pattern": "Team/<script>"}, "invalid_pattern"),
        ({"keep_latest": None, "delete_older_than_days": None}, "no_limit"),
        ({"delete_older_than_days": 10**9}, "max_value"),
    ],
)
def test_bad_rules_are_refused(fields, code):
    from django.core.exceptions import ValidationError

    rule = RetentionRule(**{"name": "r", "repository_pattern": "*", "keep_latest": 3, **fields})
    with pytest.raises(ValidationError) as failure:
        rule.full_clean()
    codes = [e.code for errors in failure.value.error_dict.values() for e in errors]
    assert code in codes


# --- Pages ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_admin_creates_edits_and_deletes_a_rule_with_audit_rows(admin_client, admin_user):
    form = {
        "name": "<script>alert(1)</script>",
        "repository_pattern": "team/*",
        "keep_latest": "3",
        "keep_regex": "",
        "delete_older_than_days": "",
        "position": "10",
        "enabled": "on",
    }
    created = admin_client.post(reverse("registry_admin:retention-rule-create"), form)
    assert created.status_code == 302
    rule = RetentionRule.objects.get()
    assert (rule.name, rule.keep_latest, rule.updated_by) == (form["name"], 3, admin_user.username)
    listing = admin_client.get(reverse("registry_admin:retention")).content.decode()
    assert "<script>alert(1)</script>" not in listing
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in listing

    edit_url = reverse("registry_admin:retention-rule-edit", args=[rule.pk])
    assert admin_client.post(edit_url, {**form, "keep_latest": "7"}).status_code == 302
    assert RetentionRule.objects.get().keep_latest == 7

    delete_url = reverse("registry_admin:retention-rule-delete", args=[rule.pk])
    assert admin_client.get(delete_url).status_code == 200
    assert RetentionRule.objects.exists()
    assert admin_client.post(delete_url).status_code == 302
    assert not RetentionRule.objects.exists()
    actions = list(
        AuditEvent.objects.filter(source=AuditEvent.Source.PORTAL).values_list("action", flat=True)
    )
    assert sorted(actions) == [
        "retention.rule_deleted",
        "retention.rule_saved",
        "retention.rule_saved",
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "changes,message",
    [
        ({"keep_regex": "([a-z"}, "This is not a regular expression the portal can run"),
        ({"keep_regex": "(?!x)y"}, "no look-ahead or look-behind"),
        ({"keep_regex": "x" * 5000}, "at most 200 characters"),
        ({"repository_pattern": "a\x00b"}, "Null characters are not allowed"),
        ({"repository_pattern": "ÄÖ/*"}, "Use lowercase letters"),
        ({"name": "a\x07b"}, "Use printable characters only"),
        ({"name": ""}, "This field is required"),
        ({"keep_latest": "-1"}, "greater than or equal to 0"),
        ({"keep_latest": "1e9999"}, "Enter a whole number"),
        ({"keep_latest": "", "delete_older_than_days": ""}, "a rule with neither"),
        ({"delete_older_than_days": "'; DROP TABLE x;--"}, "Enter a whole number"),
    ],
)
def test_malformed_rules_get_a_clear_error_and_save_nothing(admin_client, changes, message):
    form = {
        "name": "r",
        "repository_pattern": "*",
        "keep_latest": "3",
        "keep_regex": "",
        "delete_older_than_days": "",
        "position": "1",
        **changes,
    }
    response = admin_client.post(reverse("registry_admin:retention-rule-create"), form)
    assert response.status_code == 200
    assert message in response.content.decode().replace("&quot;", '"').replace("&#x27;", "'")
    assert not RetentionRule.objects.exists()


@pytest.mark.django_db
def test_a_viewer_reads_the_rules_but_cannot_change_them(viewer_client):
    rule = make_rule(keep_latest=1)
    page = viewer_client.get(reverse("registry_admin:retention"))
    assert page.status_code == 200
    html = page.content.decode()
    assert rule.name in html
    for control in ("retention/new/", f"retention/{rule.pk}/edit/", "retention/run/"):
        assert control not in html
    assert viewer_client.get(reverse("registry_admin:retention-rule-create")).status_code == 403
    assert (
        viewer_client.post(
            reverse("registry_admin:retention-rule-delete", args=[rule.pk])
        ).status_code
        == 403
    )
    assert (
        viewer_client.post(reverse("registry_admin:retention-run"), {"confirm": "yes"}).status_code
        == 403
    )
    assert RetentionRule.objects.filter(pk=rule.pk).exists()


def test_the_schedule_is_off_unless_enabled(settings):
    settings.RETENTION_SCHEDULE_ENABLED = False
    assert worker.JOBS["retention"].interval() is None
    settings.RETENTION_SCHEDULE_ENABLED = True
    settings.RETENTION_INTERVAL = 3600
    assert worker.JOBS["retention"].interval() == 3600


# --- Acceptance: 30 dated tags on the real registry -------------------------------------------

# Tag i is 3*i + 1 days old; i % 7 == 3 are releases. Rule: keep the 5 newest, keep release-N,
# delete only what is older than 20 days. Newest non-releases: 0, 1, 2, 4, 5 (kept);
# 6 is 19 days old (kept); every other non-release is older than 20 days.
EXPECTED_DELETES = {
    f"build-{i:02d}"
    for i in (7, 8, 9, 11, 12, 13, 14, 15, 16, 18, 19, 20, 21, 22, 23, 25, 26, 27, 28, 29)
}


def tag_name(i):
    return f"release-{i}" if i % 7 == 3 else f"build-{i:02d}"


def push_dated_repository(reg, repo, now):
    """30 tags with distinct image created dates, indexed with details from the registry."""
    pusher = reg.pusher()
    for i in range(30):
        created = (now - timedelta(days=3 * i + 1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        image = build_image(created=created)
        pusher.push_image(repo, tag_name(i), image)
        index.upsert_tag(repo, tag_name(i), image.digest, timezone.now())
    harness.wait_for_quiet_notifications()
    client = registry.get_client()
    for tag in Tag.objects.filter(repository__name=repo):
        reconcile.store_details(tag.digest, image_details.fetch_details(client, repo, tag.digest))


def dry_run_lines(repo):
    out = io.StringIO()
    call_command("retention", "--dry-run", stdout=out)
    text = out.getvalue()
    rows = re.findall(r"^\s{4}(delete|keep)\s+(\S+)\s.*?: (.*)$", text, re.MULTILINE)
    return text, rows


@pytest.mark.django_db(transaction=True)
def test_retention_on_thirty_dated_tags_deletes_exactly_the_expected_set(registry):
    repo = f"retention/{uuid.uuid4().hex[:8]}"
    bystander = f"keepout/{uuid.uuid4().hex[:8]}"
    now = timezone.now()
    push_dated_repository(registry, repo, now)
    old = build_image(created="2001-01-01T00:00:00Z")
    registry.pusher().push_image(bystander, "ancient", old)
    index.upsert_tag(bystander, "ancient", old.digest, now - timedelta(days=900))
    make_rule(
        name="thirty",
        repository_pattern=repo.split("/")[0] + "/*",
        keep_latest=5,
        keep_regex=r"release-\d+",
        delete_older_than_days=20,
    )
    all_tags = {tag_name(i) for i in range(30)}

    text, rows = dry_run_lines(repo)

    would_delete = {tag for action, tag, _ in rows if action == "delete"}
    kept = {tag: why for action, tag, why in rows if action == "keep"}
    assert would_delete == EXPECTED_DELETES
    assert set(kept) == all_tags - EXPECTED_DELETES
    assert kept["release-3"] == r"matches the keep regex release-\d+"
    assert kept["build-00"] == "#1 newest, within the 5 kept"
    assert kept["build-06"] == "19 days old, not older than 20 days"
    assert "(image created)" in text
    assert "Nothing was changed" in text
    assert set(registry.pusher().tags(repo)) == all_tags

    out = io.StringIO()
    call_command("retention", stdout=out)

    assert set(registry.pusher().tags(repo)) == all_tags - EXPECTED_DELETES
    assert registry.pusher().tags(bystander) == ["ancient"]
    assert f"Deleted {len(EXPECTED_DELETES)}, already gone 0, failed 0" in out.getvalue()
    deleted_rows = AuditEvent.objects.filter(
        source=AuditEvent.Source.PORTAL, action=PortalAction.TAG_DELETED, repository=repo
    )
    assert {row.tag for row in deleted_rows} == EXPECTED_DELETES
    assert all(row.actor.startswith("retention (cli:") for row in deleted_rows)
    run_row = AuditEvent.objects.get(
        source=AuditEvent.Source.PORTAL, action=PortalAction.RETENTION_RUN
    )
    assert f'"deleted": {len(EXPECTED_DELETES)}' in run_row.raw
    # Each delete is in the recycle bin first, with the rule that made it and its actor.
    held = BinItem.objects.filter(repository=repo)
    assert {tag for item in held for tag in item.tags} == EXPECTED_DELETES
    assert {(item.reason, item.state) for item in held} == {("retention:thirty", "held")}
    assert all(item.actor.startswith("retention (cli:") for item in held)
    harness.wait_for_quiet_notifications()
    assert (
        set(Tag.objects.filter(repository__name=repo).values_list("name", flat=True))
        == all_tags - EXPECTED_DELETES
    )

    again = io.StringIO()
    call_command("retention", stdout=again)

    assert "Deleted 0, already gone 0, failed 0, not attempted 0" in again.getvalue()
    assert set(registry.pusher().tags(repo)) == all_tags - EXPECTED_DELETES
    assert AuditEvent.objects.filter(
        action=PortalAction.TAG_DELETED, repository=repo
    ).count() == len(EXPECTED_DELETES)


@pytest.mark.django_db(transaction=True)
def test_run_now_from_the_page_is_confirmed_then_done_by_the_worker(registry, admin_client):
    repo = f"retpage/{uuid.uuid4().hex[:8]}"
    pusher = registry.pusher()
    images = {}
    for days, tag in ((1, "fresh"), (50, "stale")):
        image = build_image(
            created=(timezone.now() - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
        )
        pusher.push_image(repo, tag, image)
        index.upsert_tag(repo, tag, image.digest, timezone.now())
        images[tag] = image
    harness.wait_for_quiet_notifications()
    for tag, image in images.items():
        reconcile.store_details(
            image.digest, image_details.fetch_details(registry_client(), repo, image.digest)
        )
    make_rule(name="page", repository_pattern=repo, delete_older_than_days=30)

    page = admin_client.get(reverse("registry_admin:retention")).content.decode()
    assert 'data-planned-deletes="1"' in page
    assert 'data-tag="stale" data-action="delete"' in page
    asked = admin_client.post(reverse("registry_admin:retention-run"))
    assert asked.status_code == 200
    assert "Delete 1 tag now?" in asked.content.decode()
    assert worker.latest_run("retention") is None

    queued = admin_client.post(reverse("registry_admin:retention-run"), {"confirm": "yes"})
    assert queued.status_code == 302
    [run] = worker.tick(kinds=["retention"])

    assert run.state == run.State.DONE, run.error
    assert run.result["deleted"] == 1
    assert pusher.tags(repo) == ["fresh"]
    page = admin_client.get(reverse("registry_admin:retention")).content.decode()
    assert f'data-tag="{repo}:stale" data-state="deleted"' in page


@pytest.mark.django_db(transaction=True)
def test_a_run_against_a_registry_refusing_deletes_fails_and_changes_nothing(
    live_server, tmp_path, settings
):
    reg = harness.start_registry(tmp_path, live_server.url, delete_enabled=False)
    try:
        harness.registry_settings(settings, reg)
        image = build_image(created="2010-01-01T00:00:00Z")
        reg.pusher().push_image("team/old", "a", image)
        reg.pusher().push_image("team/old", "b", image)
        for tag in ("a", "b"):
            index.upsert_tag("team/old", tag, image.digest, timezone.now() - timedelta(days=400))
        make_rule(repository_pattern="team/*", keep_latest=0)

        run = worker.run_now("retention", user="test")

        assert run.state == run.State.FAILED
        assert "REGISTRY_STORAGE_DELETE_ENABLED=true" in run.error
        assert reg.pusher().tags("team/old") == ["a", "b"]
        assert reg.pusher().head_manifest("team/old", "b") == image.digest
        harness.wait_for_quiet_notifications()
    finally:
        reg.stop()


def registry_client():
    return registry.get_client()


# --- Keep expressions under RE2 (issue #14 item 6) -----------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "pattern",
    [r"((a?){10}){3}a{30}", r"(a+)+$", r"(a|aa)*", r".*.*.*.*.*x", r"(\w+)*$"],
)
def test_patterns_that_stall_a_backtracking_engine_are_accepted_and_finish(pattern):
    """The bypass of the old guard, and the shapes it refused: RE2 matches each in linear time.
    (Their speed is measured in bench/regex_keep.py; here they only have to finish.)"""
    rule = make_rule(keep_latest=0, keep_regex=pattern)
    rule.full_clean()
    for tag in ("a" * 30, "a" * 29 + "b", "a" * 128, "x" * 127 + "!"):
        rule.keeps_by_regex(tag)
    assert RetentionRule.objects.get(pk=rule.pk).keeps_by_regex("a" * 30) is (
        pattern != r".*.*.*.*.*x"
    )


@pytest.mark.django_db
def test_a_stored_rule_re2_cannot_run_keeps_every_tag_and_says_why(client):
    """A rule saved before RE2 (look-ahead was fine in Python's re) deletes nothing and the
    Retention page names the problem."""
    from .factories import make_admin

    rule = RetentionRule.objects.create(
        name="old-lookahead", repository_pattern="*", keep_latest=0, keep_regex="(?!rc)v.*"
    )
    assert rule.keeps_by_regex("rc1") and rule.keeps_by_regex("v1")
    assert "no look-ahead" in rule.keep_regex_error
    client.force_login(make_admin())
    page = client.get("/retention/").content.decode()
    assert f"The rule “{rule.name}” keeps every tag until its keep expression is fixed" in page
