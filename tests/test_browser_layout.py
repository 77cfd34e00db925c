"""Every page on a phone and a desktop, in the light and the dark theme, checked by axe-core.

Debian's Chromium through Playwright, against a portal seeded from a real registry
(tests/portal_pages.py). axe-core comes from the axe-playwright-python package (it ships
axe.min.js, injected into each page with page.evaluate, which a Content-Security-Policy does not
block). One browser context per test and one login; each page is loaded once per width.
"""

import re

import pytest
from axe_playwright_python.sync_playwright import Axe
from django.urls import reverse
from playwright.sync_api import expect

from registry_admin.tests.factories import TEST_PASSWORD, make_viewer
from registry_admin.tests.harness import free_port

from .portal_pages import page_requests, seed_portal

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}
SMALLEST = {"width": 320, "height": 640}
DESKTOP = {"width": 1280, "height": 900}
AXE = Axe()
# WCAG 2.1 A and AA, nothing else (best-practice rules are advice, not the standard).
AXE_OPTIONS = {
    "runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
    "resultTypes": ["violations"],
}
# Exceptions, each with its reason: none so far.
AXE_EXCEPTIONS = {}
# Not ours, or not a page: the JSON health probe and run status, the CSV download, Django's own
# admin (its templates are Django's), the webhook, and POSTs that only redirect or log out; the
# API's JSON and its reference page (every `api:` name: Swagger UI's own markup is checked
# against the CSP in test_browser_api_docs.py).
NOT_PAGES = {
    "registry_admin:api-token-revoke",
    "healthz",
    "metrics",
    "admin:index",
    "registry_admin:audit-export",
    "registry_admin:run-status",
    "registry_admin:registry-events",
    "registry_admin:run-request",
    "registry_admin:user-service-repair",
    "registry_admin:token",
    "registry_admin:access-rule-remove",
    "registry_admin:access-robot-remove",
    "logout",
    "login",
}
NAV = [
    "Dashboard",
    "Repositories",
    "Retention",
    "Users",
    "Access",
    "Storage",
    "Audit log",
    "API tokens",
]


def log_in(page, base, user):
    page.goto(base + reverse("login"))
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()


def post_page(page, path, data):
    """Submit a form the way the page's own buttons do (with the page's CSRF token)."""
    with page.expect_navigation():
        page.evaluate(
            """([path, data]) => {
            const form = document.createElement("form");
            form.method = "post";
            form.action = path;
            const add = (name, value) => {
                const input = document.createElement("input");
                input.type = "hidden"; input.name = name; input.value = value;
                form.appendChild(input);
            };
            add("csrfmiddlewaretoken",
                document.querySelector("input[name=csrfmiddlewaretoken]").value);
            for (const [name, value] of Object.entries(data)) {
                for (const v of [].concat(value)) add(name, v);
            }
            document.body.appendChild(form);
            form.submit();
        }""",
            [path, data],
        )


WIDEST = """() => {
    const width = document.documentElement.clientWidth;
    const over = (el) => el && el.getBoundingClientRect().right > width + 1;
    // The outermost elements that reach past the edge: where the overflow starts.
    const wide = [...document.querySelectorAll("body *")].filter(
        (el) => over(el) && !over(el.parentElement));
    const scrollers = [...document.querySelectorAll("*")].filter(
        (el) => el.scrollWidth > el.clientWidth + 1).map((el) => el.tagName + "." +
        el.className + ":" + getComputedStyle(el).overflowX + ":" + el.scrollWidth + "/" +
        el.clientWidth);
    return scrollers.concat(wide.slice(-3).map((el) => el.tagName.toLowerCase() +
        (el.id ? "#" + el.id : "") + (el.className ? "." + el.className : "")));
}"""


def no_sideways_scroll(page, what):
    page.wait_for_load_state("load")
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], (
        f"{what}: the page scrolls sideways ({widths[0]} > {widths[1]}), "
        f"past the edge: {page.evaluate(WIDEST)}"
    )


def axe_violations(page, what):
    results = AXE.run(page, options=AXE_OPTIONS).response["violations"]
    found = []
    for violation in results:
        if violation["id"] in AXE_EXCEPTIONS:
            continue
        nodes = "; ".join(" ".join(node["target"]) for node in violation["nodes"][:5])
        found.append(f"{what}: {violation['id']} ({violation['help']}) at {nodes}")
    return found


# Ids the page's live DOM uses more than once: a label, aria-describedby or #anchor then points at
# the first one only. axe 4.12 does not report it: its duplicate-id rules are disabled (WCAG 4.1.1
# is obsolete), duplicate-id-aria only asks for a review, and a second field whose label shares the
# first one's `for` passes the label rule.
DUPLICATE_IDS = """() => {
    const counts = new Map();
    for (const el of document.querySelectorAll("[id]")) {
        counts.set(el.id, (counts.get(el.id) || 0) + 1);
    }
    return [...counts].filter(([, n]) => n > 1).map(([id, n]) => `#${id} (${n} times)`);
}"""


def duplicate_ids(page, what):
    found = page.evaluate(DUPLICATE_IDS)
    return [f"{what}: duplicate id {', '.join(found)}"] if found else []


def set_theme(page, scheme):
    """The system setting, followed by the default "auto" theme."""
    # Reduced motion: Pico then drops its colour transitions, which axe would measure midway.
    page.emulate_media(color_scheme=scheme, reduced_motion="reduce")
    # The media query's change event arrives a moment later.
    page.wait_for_function(
        "scheme => document.documentElement.dataset.themeEffective === scheme", arg=scheme
    )


class Checker:
    """Loads each page at phone and desktop width and collects every problem, so one run
    reports them all instead of stopping at the first."""

    def __init__(self, page):
        self.page = page
        self.problems = []
        self.pages = 0

    def check_loaded(self, what):
        page = self.page
        assert page.title().endswith("· Oyster"), what
        self.pages += 1
        # Ids do not depend on the width or the theme: once per page.
        self.problems += duplicate_ids(page, what)
        # Phone width in the light theme, the smallest width, then desktop in the dark theme.
        page.set_viewport_size(PHONE)
        set_theme(page, "light")
        self.check_here(what + " @390 light")
        page.set_viewport_size(SMALLEST)
        self.sideways(what + " @320")
        page.set_viewport_size(DESKTOP)
        set_theme(page, "dark")
        self.check_here(what + " @1280 dark")
        page.set_viewport_size(PHONE)
        set_theme(page, "light")

    def check_here(self, what):
        self.sideways(what)
        self.problems += axe_violations(self.page, what)

    def sideways(self, what):
        try:
            no_sideways_scroll(self.page, what)
        except AssertionError as exc:
            self.problems.append(str(exc))

    def get(self, base, path, what):
        self.page.goto(base + path)
        self.check_loaded(what)

    def post(self, path, data, what):
        post_page(self.page, path, data)
        self.check_loaded(what)


def pages_of(seed):
    return [
        r for r in page_requests(seed) if r.name not in NOT_PAGES and not r.name.startswith("api:")
    ]


@pytest.fixture
def seeded(tmp_path, settings, admin_client):
    settings.HTPASSWD_BCRYPT_ROUNDS = 4
    seed = seed_portal(tmp_path, settings, admin_client)
    yield seed
    seed.close()


@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_every_page_at_phone_and_desktop_width_in_both_themes(
    page, live_server, seeded, admin_user, role
):
    user = admin_user if role == "admin" else make_viewer()
    base = live_server.url
    page.set_viewport_size(PHONE)
    page.goto(base + reverse("login"))
    checker = Checker(page)
    checker.check_loaded("login")
    log_in(page, base, user)

    # Every navigation item is on screen and works at 390 px, from every area it leads to.
    nav = page.get_by_role("navigation", name="Main")
    items = NAV + (["Settings"] if role == "admin" else [])
    for name in items:
        link = nav.get_by_role("link", name=name, exact=True)
        expect(link).to_be_in_viewport()
        box = link.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], name
        assert box["height"] >= 44, f"{name}: touch target {box['height']} px high"
        link.click()
        expect(link).to_have_attribute("aria-current", "page")
        page.wait_for_load_state("load")  # stylesheets applied before measuring
        no_sideways_scroll(page, f"after clicking {name}")
    expect(nav.get_by_role("button", name=re.compile("^Log out"))).to_be_in_viewport()

    for request in pages_of(seeded):
        if request.method == "GET":
            checker.get(base, request.path, request.name)
        elif role == "admin":
            # The confirmations behind the delete and retention buttons.
            checker.post(request.path, request.data or {}, request.name)

    if role == "admin":
        # A delete's results page, then the error states with the registry stopped.
        checker.post(
            reverse("registry_admin:tag-delete"),
            {
                "repository": seeded.repository,
                "tag": seeded.sibling_tag,
                "digest": seeded.digest,
                "confirm": "yes",
            },
            "tag-delete results",
        )
        seeded.registry.stop()
        for name, path in [
            ("dashboard, registry down", reverse("registry_admin:dashboard")),
            ("repositories, registry down", reverse("registry_admin:repositories")),
            (
                "tag, registry down",
                reverse("registry_admin:tag", args=[seeded.repository, seeded.tag]),
            ),
        ]:
            checker.get(base, path, name)
        expect(page.locator("body")).to_contain_text("unreachable")

    assert checker.pages >= 15
    assert not checker.problems, "\n".join(checker.problems)


def test_empty_portal_and_unreachable_registry(page, live_server, admin_user, settings, tmp_path):
    """A fresh install: nothing indexed, no scan, no events, no htpasswd file, no worker, and a
    registry that does not answer."""
    settings.REGISTRY_URL = f"http://127.0.0.1:{free_port()}"
    settings.REGISTRY_TIMEOUT = 1
    settings.HTPASSWD_PATH = str(tmp_path / "htpasswd")
    settings.STORAGE_FILESYSTEM_ROOT = str(tmp_path / "no-storage")
    base = live_server.url
    page.set_viewport_size(PHONE)
    log_in(page, base, admin_user)
    checker = Checker(page)
    for name in ["dashboard", "repositories", "users", "storage", "audit", "retention"]:
        checker.get(base, reverse(f"registry_admin:{name}"), name + " (empty)")
    checker.get(base, reverse("registry_admin:notification-settings"), "settings (empty)")
    checker.get(base, "/no-such-page/", "404")
    page.goto(base + reverse("registry_admin:dashboard"))
    expect(page.locator("[data-warning=worker-never]")).to_be_visible()
    expect(page.locator("[data-state=unreachable]")).to_be_visible()
    assert not checker.problems, "\n".join(checker.problems)


def test_the_theme_switch_is_remembered_and_redraws_the_charts(page, live_server, viewer_user):
    base = live_server.url
    page.emulate_media(color_scheme="light")
    log_in(page, base, viewer_user)
    html = page.locator("html")
    chart = page.locator("#audit-activity-chart")
    expect(html).not_to_have_attribute("data-theme", re.compile("."))
    expect(chart).to_have_attribute("data-theme", "light")

    # The system setting alone switches an "auto" page, charts included.
    page.emulate_media(color_scheme="dark")
    expect(html).to_have_attribute("data-theme-effective", "dark")
    expect(chart).to_have_attribute("data-theme", "dark")
    page.emulate_media(color_scheme="light")

    toggle = page.get_by_role("button", name="Theme: auto")
    toggle.click()
    expect(html).to_have_attribute("data-theme", "light")
    page.get_by_role("button", name="Theme: light").click()
    expect(html).to_have_attribute("data-theme", "dark")
    expect(chart).to_have_attribute("data-theme", "dark")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    # Remembered across pages and reloads, and stronger than the system setting.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Storage").click()
    expect(html).to_have_attribute("data-theme", "dark")
    page.reload()
    expect(page.get_by_role("button", name="Theme: dark")).to_be_visible()
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == background
    assert background != "rgb(255, 255, 255)"
    # Back to following the system.
    page.get_by_role("button", name="Theme: dark").click()
    expect(html).not_to_have_attribute("data-theme", re.compile("."))
    assert page.evaluate("localStorage.getItem('oyster-theme')") == "auto"
