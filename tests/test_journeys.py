"""Whole journeys through the portal in Debian's Chromium, against the live test server and the
session's real registry: what an admin and a viewer do on a normal day, end to end.

Each journey reaches its state the way a person would (forms, buttons, skopeo and HTTP pushes);
the background work a deployment's `run_worker` would do is run with `worker.tick()` in the test
thread, right after the click that asked for it. Narrower browser tests of each page live beside
their features; these check that the pieces hold together.
"""

import re
import time
import uuid

import pytest
import requests
from playwright.sync_api import expect

from registry_admin import worker
from registry_admin.models import AuditEvent, Manifest, RetentionRule, Run, Tag
from registry_admin.tests.factories import TEST_PASSWORD, make_viewer
from registry_admin.tests.harness import PUSH_USER, wait_for_quiet_notifications
from registry_admin.tests.images import (
    build_image,
    build_index,
    sha256_digest,
    wait_for,
    write_oci_layout,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Every page of the portal ends its title with this; the part before it names the page.
TITLE = re.compile(r"^(?!Oyster · ).+ · Oyster$")


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def log_in(page, live_server, user, path="/"):
    page.goto(f"{live_server.url}/login/?next={path}")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name=f"Log out {user.username}")).to_be_visible()


def main_nav(page, area):
    page.get_by_role("navigation", name="Main").get_by_role("link", name=area).click()


def reload_until(page, locator, count, attempts=60):
    """Reload until `locator` matches `count` elements: notifications arrive a moment after
    the registry answered the push, and the page shows what the index holds."""
    for _ in range(attempts):
        if locator.count() == count:
            break
        page.wait_for_timeout(100)
        page.reload()
    expect(locator).to_have_count(count)


def tag_order(page):
    return page.locator("table.tag-table tbody tr").evaluate_all(
        "rows => rows.map(row => row.dataset.tag)"
    )


def wait_for_indexed(repository, tags):
    """The push notifications have put `tags` of `repository` into the index."""
    wait_for(
        lambda: (
            set(Tag.objects.filter(repository__name=repository).values_list("name", flat=True))
            == set(tags)
        ),
        message=f"{repository} tags {sorted(tags)} in the index",
    )


def fetch_details(digests):
    """Run the worker's details job (requested by the push notifications) until the index
    knows the created date, size and platforms of every digest."""

    def fetched():
        worker.tick(["details"])
        return Manifest.objects.filter(
            digest__in=digests, details_fetched_at__isnull=False
        ).count() == len(set(digests))

    wait_for(fetched, timeout=20, interval=0.2, message="image details fetched by the worker")


def push_and_index(registry, repository, tagged_images, details=False):
    """Push {tag: image} over HTTP as the harness's push user; wait until the index has them."""
    pusher = registry.pusher()
    for tag, image in tagged_images.items():
        pusher.push_image(repository, tag, image)
    wait_for_indexed(repository, tagged_images)
    if details:
        fetch_details([image.digest for image in tagged_images.values()])
    return pusher


def csrf_token(page):
    return next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")


def test_an_admin_adds_a_registry_user_whose_push_is_audited_and_listed(
    page, live_server, admin_user, registry, skopeo, settings, tmp_path
):
    # The registry runs bcrypt on each request of the push; the lowest cost keeps skopeo quick.
    settings.HTPASSWD_BCRYPT_ROUNDS = 4
    name = unique("ci")
    password = f"journey-{uuid.uuid4().hex}"
    repository = f"journey/{name}/app"

    log_in(page, live_server, admin_user, "/users/")
    page.get_by_role("button", name="Add a user").click()
    page.get_by_label("User name").fill(name)
    page.get_by_label("New password", exact=True).fill(password)
    page.get_by_label("New password again").fill(password)
    page.get_by_role("button", name="Add the user").click()
    expect(page.get_by_role("status").first).to_contain_text(f"Created the registry user {name}")
    user_row = page.locator(f"tr[data-user='{name}']")
    expect(user_row).to_be_visible()

    image = build_image(created="2025-02-03T04:05:06Z")
    layout = tmp_path / "layout"
    write_oci_layout(str(layout), image, "v1")
    pushed = skopeo.copy_to_registry(str(layout), "v1", repository, name, password)
    assert pushed.returncode == 0, pushed.stderr

    main_nav(page, "Audit log")
    page.get_by_label("User", exact=True).fill(name)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"actor={name}"))
    push_rows = page.locator("table.audit-table tbody tr").filter(has_text=f"{repository}:v1")
    reload_until(page, push_rows, 1)
    cells = push_rows.first.locator("td")
    expect(cells.nth(1)).to_contain_text("push")
    expect(cells.nth(1)).to_contain_text("manifest")
    expect(cells.nth(3)).to_have_text(name)

    # The push notification alone put it in the index: no "Refresh now", no reconcile.
    main_nav(page, "Repositories")
    page.get_by_role("searchbox", name="Search").fill(name)
    page.keyboard.press("Enter")
    repository_rows = page.locator("table.repository-table tbody tr")
    reload_until(page, repository_rows, 1)
    assert not Run.objects.filter(kind="sync").exists()
    repository_rows.first.get_by_role("link", name=repository).click()
    expect(page.locator("tr[data-tag=v1]")).to_have_attribute("data-digest", image.digest)

    # The users page reads the user's last push from the same audit trail.
    main_nav(page, "Users")
    expect(user_row.locator("td").nth(2).locator("time")).to_be_visible()


def test_browse_a_repository_sort_by_created_and_inspect_an_index(
    page, live_server, viewer_user, registry
):
    repository = f"journey/{unique('browse')}"
    newest = build_image(created="2025-06-01T00:00:00Z")
    oldest = build_image(created="2021-03-01T00:00:00Z")
    middle = build_image(created="2023-01-15T00:00:00Z")
    multi = build_index()  # children created 2024-01-02
    push_and_index(
        registry,
        repository,
        {"alpha": newest, "beta": oldest, "gamma": middle, "multi": multi},
        details=True,
    )

    log_in(page, live_server, viewer_user, "/repositories/")
    page.get_by_role("searchbox", name="Search").fill(repository)
    page.keyboard.press("Enter")
    page.get_by_role("link", name=repository).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(repository)

    page.get_by_label("Sort by").select_option(label="Name (versions ascending)")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"sort=name"))
    assert tag_order(page) == ["alpha", "beta", "gamma", "multi"]
    page.get_by_label("Sort by").select_option(label="Created (newest first)")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"sort=created"))
    assert tag_order(page) == ["alpha", "multi", "gamma", "beta"]
    expect(page.locator("tr[data-tag=multi]")).to_contain_text("linux/arm64/v8")

    page.get_by_role("link", name="multi", exact=True).click()
    expect(page).to_have_title(f"{repository}:multi · Oyster")
    platforms = page.locator("table.platform-table tbody tr")
    expect(platforms).to_have_count(2)
    expect(platforms.nth(0)).to_contain_text("linux/amd64")
    expect(platforms.nth(1)).to_contain_text("linux/arm64/v8")
    expect(page.locator(".image-summary")).to_contain_text("2024-01-02 03:04:05 UTC")

    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    host = registry.url.split("://", 1)[1]
    expect(page.locator("#pull-tag")).to_have_value(f"docker pull {host}/{repository}:multi")
    page.locator("button[data-copy-target=pull-tag]").click()
    expect(page.locator("button[data-copy-target=pull-tag]")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == (
        f"docker pull {host}/{repository}:multi"
    )

    arm = multi.children[1]
    platforms.nth(1).get_by_role("link").click()
    expect(page).to_have_title(f"{repository}@{arm.digest} · Oyster")
    layers = page.locator("table.layer-table tbody tr")
    expect(layers).to_have_count(1)
    expect(layers.first.locator("code.digest")).to_have_attribute(
        "title", sha256_digest(arm.layers[0])
    )
    expect(page.locator("table.history-table")).to_contain_text("ADD layer0")
    expect(page.locator("table.image-config")).to_contain_text("linux/arm64/v8")
    expect(page.locator("#pull-digest")).to_have_value(
        f"docker pull {host}/{repository}@{arm.digest}"
    )


def test_deleting_one_of_two_tags_on_an_image_leaves_the_other_pullable(
    page, live_server, admin_user, registry
):
    repository = f"journey/{unique('delete')}"
    image = build_image()
    pusher = push_and_index(registry, repository, {"latest": image, "release-1": image})

    log_in(page, live_server, admin_user, f"/repositories/{repository}/")
    expect(page.locator("tr[data-tag=latest]")).to_contain_text("same image as release-1")
    page.get_by_role("link", name="latest", exact=True).click()
    page.get_by_role("button", name="Delete this tag…").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Delete the tag latest")
    expect(page.locator("[data-sibling=release-1]")).to_be_visible()
    page.get_by_role("button", name=f"Delete {repository}:latest").click()

    expect(page.locator("#delete-results tr[data-tag=latest]")).to_have_attribute(
        "data-state", "deleted"
    )
    assert pusher.head_manifest(repository, "latest") is None
    assert pusher.head_manifest(repository, "release-1") == image.digest
    assert pusher.tags(repository) == ["release-1"]

    # "Back" leads to the repository (the deleted tag's own page is gone).
    page.get_by_role("link", name="Back").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(repository)
    expect(page.locator("table.tag-table tbody tr")).to_have_count(1)
    expect(page.locator("tr[data-tag=release-1]")).to_have_attribute("data-digest", image.digest)
    main_nav(page, "Audit log")
    page.get_by_label("Repository (prefix)").fill(repository)
    page.keyboard.press("Enter")
    delete_row = page.locator("table.audit-table tbody tr").filter(has_text="tag.deleted")
    expect(delete_row).to_have_count(1)
    expect(delete_row.locator("td").nth(3)).to_have_text(admin_user.username)


def test_a_retention_rule_made_in_the_page_dry_runs_then_runs_in_the_worker(
    page, live_server, admin_user, registry
):
    repository = f"journey/{unique('retain')}"
    builds = {
        "build-1": build_image(created="2022-01-01T00:00:00Z"),
        "build-2": build_image(created="2023-01-01T00:00:00Z"),
        "build-3": build_image(created="2024-01-01T00:00:00Z"),
    }
    pusher = push_and_index(
        registry, repository, {**builds, "stable": builds["build-1"]}, details=True
    )
    rule_name = unique("keep-one")

    log_in(page, live_server, admin_user, "/retention/")
    page.get_by_role("button", name="Add a rule").click()
    page.get_by_label("Name", exact=True).fill(rule_name)
    page.get_by_label("Repositories").fill(repository)
    page.get_by_label("Keep the newest N tags").fill("1")
    page.get_by_label("Always keep tags matching").fill("^stable$")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status").first).to_contain_text(
        f"Saved the retention rule “{rule_name}”"
    )

    # The dry run: the page shows each decision and deletes nothing.
    plan = page.locator(f"section[data-rule='{rule_name}'] details[data-repository='{repository}']")
    decisions = plan.locator("tr[data-tag]").evaluate_all(
        "rows => Object.fromEntries(rows.map(row => [row.dataset.tag, row.dataset.action]))"
    )
    assert decisions == {
        "build-1": "delete",
        "build-2": "delete",
        "build-3": "keep",
        "stable": "keep",
    }
    expect(plan.locator("tr[data-tag=build-1]")).to_contain_text("image created")
    assert pusher.tags(repository) == ["build-1", "build-2", "build-3", "stable"]

    page.get_by_role("button", name="Run the rules now…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Delete 2 tags now?")
    page.get_by_role("button", name="Delete 2 tags").click()
    expect(page.get_by_role("status").first).to_contain_text("is requested")
    (run,) = worker.tick(["retention"])
    assert run.state == Run.State.DONE, run.error

    page.reload()
    expect(page.locator("[data-run-state]")).to_have_attribute("data-run-state", "done")
    expect(page.get_by_text("Deleted 2, already gone 0, failed 0")).to_be_visible()
    page.get_by_text("Tags of that run").click()
    results = page.locator("#retention-last-run tr[data-tag]")
    expect(results).to_have_count(2)
    for tag in ("build-1", "build-2"):
        expect(
            page.locator(f"#retention-last-run tr[data-tag='{repository}:{tag}']")
        ).to_have_attribute("data-state", "deleted")
    assert pusher.tags(repository) == ["build-3", "stable"]
    assert pusher.head_manifest(repository, "stable") == builds["build-1"].digest


def test_the_storage_page_draws_its_charts_after_a_scan(page, live_server, admin_user, registry):
    repository = f"journey/{unique('storage')}"
    push_and_index(registry, repository, {"v1": build_image()})
    chart_errors = []
    page.on("pageerror", lambda error: chart_errors.append(str(error)))

    log_in(page, live_server, admin_user, "/storage/")
    page.get_by_role("button", name="Scan now").click()
    expect(page.locator(".run-status[data-run-kind=storage_scan]")).to_contain_text("Requested")
    (run,) = worker.tick(["storage_scan"])
    assert run.state == Run.State.DONE, run.error

    # The progress widget sees the run finish and reloads the page with the snapshot.
    expect(page.locator(f"tr[data-repository='{repository}']")).to_be_visible(timeout=15000)
    canvases = page.locator("canvas")
    expect(canvases).to_have_count(2)
    # Chart.js is a deferred script: right after the reload the canvases can be there before it.
    # Polled from here: wait_for_function's polling evaluates its predicate with eval inside
    # the page, which the page's CSP (no 'unsafe-eval') refuses once the first check fails.
    deadline = time.monotonic() + 10
    while not page.evaluate(
        "window.Chart !== undefined"
        " && Chart.getChart(document.querySelector('canvas')) !== undefined"
    ):
        assert time.monotonic() < deadline, "Chart.js never drew the storage charts"
        time.sleep(0.05)
    assert page.evaluate(
        "Array.from(document.querySelectorAll('canvas'))"
        ".every(canvas => Chart.getChart(canvas) !== undefined)"
    )
    drawn, given = page.evaluate(
        """[Chart.getChart('storage-top-chart').data.labels,
            JSON.parse(document.getElementById('storage-chart-data').textContent).top.labels]"""
    )
    assert drawn == given and len(drawn) >= 1
    assert chart_errors == []


def test_a_viewer_sees_no_controls_and_cannot_post_past_them(page, live_server, registry, db):
    viewer = make_viewer(unique("viewer"))
    repository = f"journey/{unique('viewer')}"
    image = build_image()
    pusher = push_and_index(registry, repository, {"one": image, "two": image})
    rule = RetentionRule.objects.create(
        name=unique("rule"), repository_pattern=repository, keep_latest=1
    )
    htpasswd_before = registry.htpasswd_path.read_bytes()

    log_in(page, live_server, viewer, "/")
    controls = re.compile(
        r"^(Add a user|Add a rule|Change password|Reset password|Delete.*|Edit|Refresh now|"
        r"Scan now|Run the rules now…|Write REGISTRY_PASSWORD.*)$"
    )
    pages = [
        "/users/",
        f"/repositories/{repository}/",
        f"/repositories/{repository}/-/tags/one/",
        f"/repositories/{repository}/-/manifests/{image.digest}/",
        "/retention/",
        "/storage/",
        "/repositories/",
        "/",
    ]
    for path in pages:
        page.goto(live_server.url + path)
        expect(page).to_have_title(TITLE)
        for role in ("button", "link"):
            expect(page.get_by_role(role, name=controls), f"{role} on {path}").to_have_count(0)
        expect(page.get_by_role("checkbox", name=re.compile(r"^Select ")), path).to_have_count(0)
        # The only form that changes anything is the viewer's own "Log out".
        post_forms = page.locator("form[method=post]").evaluate_all(
            "forms => forms.map(form => new URL(form.action).pathname)"
        )
        assert post_forms == ["/logout/"], (path, post_forms)
    page.goto(f"{live_server.url}/users/")
    expect(page.locator(f"tr[data-user='{PUSH_USER}']")).to_be_visible()

    token = csrf_token(page)
    attempts = {
        "/users/new/": {"username": "sneaky", "mode": "generated"},
        "/users/password/": {"name": PUSH_USER, "mode": "generated"},
        "/users/delete/": {"name": PUSH_USER, "confirm": "yes"},
        "/users/service/repair/": {},
        "/deletes/tag/": {
            "repository": repository,
            "tag": "one",
            "digest": image.digest,
            "confirm": "yes",
        },
        "/deletes/image/": {"repository": repository, "digest": image.digest, "confirm": "yes"},
        "/deletes/tags/": {"repository": repository, "tag": "two", "confirm": "yes"},
        "/deletes/repository/": {
            "repository": repository,
            "confirm": "yes",
            "typed_name": repository,
        },
        "/retention/new/": {"name": "sneaky", "repository_pattern": "*", "keep_latest": "0"},
        f"/retention/{rule.pk}/edit/": {"name": rule.name, "repository_pattern": "*"},
        f"/retention/{rule.pk}/delete/": {},
        "/retention/run/": {"confirm": "yes"},
        "/runs/sync/request": {},
        "/runs/storage_scan/request": {},
    }
    for path, form in attempts.items():
        response = page.request.post(
            live_server.url + path,
            form={**form, "csrfmiddlewaretoken": token},
            headers={"X-CSRFToken": token},
            max_redirects=0,
        )
        assert response.status == 403, (path, response.status)
        assert "CSRF" not in response.text(), path  # refused for the role, not the token
    for path in ("/users/new/", "/retention/new/", f"/retention/{rule.pk}/edit/"):
        assert page.request.get(live_server.url + path, max_redirects=0).status == 403, path

    assert pusher.tags(repository) == ["one", "two"]
    assert registry.htpasswd_path.read_bytes() == htpasswd_before
    assert list(RetentionRule.objects.values_list("name", "repository_pattern")) == [
        (rule.name, repository)
    ]
    assert not Run.objects.filter(kind__in=["sync", "storage_scan", "retention"]).exists()
    # The same token is good for what a viewer may do, so the refusals above were the role's.
    logout = page.request.post(
        f"{live_server.url}/logout/", form={"csrfmiddlewaretoken": token}, max_redirects=0
    )
    assert logout.status == 302


# Every visible input, select and textarea has a name a screen reader reads out; every button
# too; no inline event handlers (the pages' scripts attach their own).
UNLABELLED = """() => {
  const named = (el) => {
    if ((el.getAttribute("aria-label") || "").trim()) return true;
    const ids = (el.getAttribute("aria-labelledby") || "").split(/\\s+/).filter(Boolean);
    if (ids.some((id) => (document.getElementById(id)?.textContent || "").trim())) return true;
    return Array.from(el.labels || []).some((label) => label.textContent.trim());
  };
  const visible = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
  const fields = Array.from(document.querySelectorAll("input, select, textarea"))
    .filter((el) => el.type !== "hidden" && visible(el) && !named(el));
  const buttons = Array.from(document.querySelectorAll("button, [role=button]"))
    .filter((el) => visible(el) && !el.textContent.trim() && !named(el));
  const handlers = Array.from(document.querySelectorAll("*"))
    .filter((el) => Array.from(el.attributes).some((a) => a.name.startsWith("on")));
  return [...fields, ...buttons, ...handlers].map((el) => el.outerHTML.slice(0, 160));
}"""


def check_page(page, path):
    expect(page, path).to_have_title(TITLE)
    assert page.locator("h1").count() == 1, f"{path}: one h1"
    assert page.evaluate(UNLABELLED) == [], path


def test_every_page_has_a_title_labelled_fields_and_keyboard_forms(
    page, live_server, admin_user, registry
):
    repository = f"journey/{unique('a11y')}"
    image, multi = build_image(), build_index()
    push_and_index(registry, repository, {"v1": image, "multi": multi})
    rule = RetentionRule.objects.create(
        name=unique("rule"), repository_pattern=repository, keep_latest=0
    )

    page.goto(f"{live_server.url}/login/")
    check_page(page, "/login/")
    log_in(page, live_server, admin_user, "/")
    wait_for_quiet_notifications()
    event = AuditEvent.objects.filter(repository=repository).first()
    paths = [
        "/",
        "/repositories/",
        f"/repositories/{repository}/",
        f"/repositories/{repository}/-/tags/v1/",
        f"/repositories/{repository}/-/tags/multi/",
        f"/repositories/{repository}/-/manifests/{multi.children[0].digest}/",
        "/users/",
        "/users/new/",
        f"/users/password/?name={PUSH_USER}",
        f"/users/delete/?name={PUSH_USER}",
        "/storage/",
        "/audit/",
        f"/audit/{event.pk}/",
        "/audit/rejected/",
        "/settings/notifications/",
        "/retention/",
        "/retention/new/",
        f"/retention/{rule.pk}/edit/",
        f"/retention/{rule.pk}/delete/",
        "/repositories/Not..A..Name/",  # the 400 page
    ]
    for path in paths:
        page.goto(live_server.url + path)
        check_page(page, path)
    # Pages reached only by a POST: the delete confirmations and the retention run.
    page.goto(f"{live_server.url}/repositories/{repository}/")
    page.get_by_label("Select v1").check()
    page.get_by_role("button", name="Delete selected tags…").click()
    check_page(page, "bulk delete confirmation")
    page.goto(f"{live_server.url}/repositories/{repository}/-/tags/v1/")
    page.get_by_role("button", name="Delete the image and all its tags…").click()
    check_page(page, "image delete confirmation")
    page.goto(f"{live_server.url}/retention/")
    page.get_by_role("button", name="Run the rules now…").click()
    check_page(page, "retention run confirmation")

    # The create-user form with the keyboard alone: Tab to the first field, type, Enter.
    name = unique("keyboard")
    password = f"typed-{uuid.uuid4().hex}"
    page.goto(f"{live_server.url}/users/new/")
    for _ in range(40):
        if page.evaluate("document.activeElement.id") == "id_username":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "id_username"
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    assert page.evaluate("[document.activeElement.name, document.activeElement.value]") == [
        "mode",
        "typed",
    ]
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "id_password1"
    page.keyboard.type(password)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "id_password2"
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    expect(page.get_by_role("status").first).to_contain_text(f"Created the registry user {name}")
    assert requests.get(f"{registry.url}/v2/", auth=(name, password), timeout=5).status_code == 200
