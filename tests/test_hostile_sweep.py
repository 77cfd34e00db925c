"""Hostile input sweep: every form, query parameter and path segment of the portal.

As an admin and as a viewer, every page (every URL pattern, with real arguments from a seeded
index) is fetched, its forms are parsed with html.parser, and each form is submitted with each
hostile value: in every field at once, and in one field at a time with the others left as the
page filled them. The same values go into every query parameter the pages read and into every
path segment of every URL pattern. Each answer must be below 500, must not reflect
`<script>alert(1)</script>` unescaped, must not redirect off the site, and must leave the
database and the htpasswd file exactly as they were.

"Exactly as they were" excludes, by design, the rows that exist to record refused attempts:
django-axes' failed-login records, the webhook's unauthorized-delivery counter and /metrics'
running totals, which count failed logins and rejected deliveries (a refusal that left no trace
would be the bug there), and the session table (the framework's own bookkeeping). Two changes are accepted when they are exactly what was asked: editing a retention
rule's name or keep-regex to a hostile but valid value (stored verbatim, shown escaped, audited;
the test checks that and puts the rule back), and the webhook storing a hostile body as a
rejected delivery when the token is right.

Confirmation pages (reached by a first POST) are swept with every field hostile at once, and one
field at a time except `next` and `expect`: those two never gate a delete (a bad one is ignored),
so with the rest valid the confirmed delete would rightly go ahead.

Bounded by sampling: every form gets every value, but fields x values x pages are not combined
beyond that; the whole sweep takes well under a minute.
"""

import hashlib
import inspect
import json
import logging
import re
import traceback
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from django.apps import apps
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse

from registry_admin import worker
from registry_admin.models import AuditEvent, RejectedDelivery, RetentionRule
from registry_admin.tests.factories import make_viewer
from registry_admin.tests.harness import NOTIFICATIONS_TOKEN, live_fixture

from .portal_pages import page_requests, seed_portal

pytestmark = pytest.mark.slow

SCRIPT = "<script>alert(1)</script>"
HOSTILE = {
    "oversized": "x" * 10_000,
    # right-to-left override, Hebrew, an emoji ZWJ sequence, stacked combining marks
    "unicode": "\u202eevil\u202c שלום 👩🏽\u200d💻 Z\u0351\u0315a\u0310l\u0352g\u0300o",
    "control": "a\x00b\x07\x1b[31mc\x7f",
    "crlf": "a\r\nSet-Cookie: hostile=1",
    "traversal": "../../etc/passwd",
    "script": SCRIPT,
    "sql": "' OR 1=1 --",
    "percent_nul": "%00",
    "offsite": "//evil.example/",
}
# Extra values for <int:...> path segments, which only digits reach.
HOSTILE_NUMBERS = ["0", "9" * 40, "18446744073709551616"]
# Rows that record refused attempts, and the session store: see the module docstring.
EXCLUDED_MODELS = {
    "sessions.session",
    "axes.accessattempt",
    "axes.accesslog",
    "axes.accessfailurelog",
    "registry_admin.deliverycounter",
    "registry_admin.metriccounter",
}
CONFIRMATION_ENDPOINTS = (
    "tag-delete",
    "image-delete",
    "tags-bulk-delete",
    "repository-delete",
    "retention-run",
)
NEVER_GATING = {"next", "expect"}
# Routes whose view acts on a POST: their path segments are swept with POST too.
POST_ROUTES = ("/edit/", "/delete/", "/request")
RULE_SAVED = "retention.rule_saved"
RULE_FIELDS = (
    "name",
    "repository_pattern",
    "keep_latest",
    "keep_regex",
    "delete_older_than_days",
    "position",
    "enabled",
)


# --- forms --------------------------------------------------------------------------------------


@dataclass
class Form:
    action: str
    method: str
    fields: list = field(default_factory=list)  # (name, value) pairs as the page fills them
    names: list = field(default_factory=list)  # every field name, in order, once
    unticked: list = field(default_factory=list)  # (name, value) of boxes left unticked

    def add(self, name, value, submitted=True, box=False):
        if name not in self.names:
            self.names.append(name)
        if submitted:
            self.fields.append((name, value))
        elif box:
            self.unticked.append((name, value))

    def ticked(self):
        """The form as submitted with every checkbox ticked (a bulk delete with a selection)."""
        return Form(self.action, self.method, self.fields + self.unticked, self.names)

    @property
    def editable(self):
        return [name for name in self.names if name != "csrfmiddlewaretoken"]

    def key(self):
        return (self.method, urlsplit(self.action).path, tuple(sorted(self.editable)))

    def data(self, hostile=None, only=None):
        """The fields as submitted: as filled, or with `hostile` in `only` (None: everywhere)."""
        result = {}
        for name in self.names:
            targeted = hostile is not None and name != "csrfmiddlewaretoken"
            if targeted and only in (None, name):
                result[name] = hostile
            else:
                values = [v for n, v in self.fields if n == name]
                if values:
                    result[name] = values if len(values) > 1 else values[0]
        return result


class FormParser(HTMLParser):
    """Forms with their inputs, selects, textareas and submit buttons (with `form=` owners)."""

    def __init__(self, page_path):
        super().__init__(convert_charrefs=True)
        self.page_path = page_path
        self.forms, self.by_id = [], {}
        self.current = self.select = self.textarea = None
        self.select_first = None

    def owner(self, attrs):
        return self.by_id.get(attrs["form"]) if "form" in attrs else self.current

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        if tag == "form":
            action = attrs.get("action") or self.page_path
            self.current = Form(action=action, method=(attrs.get("method") or "get").lower())
            self.forms.append(self.current)
            if attrs.get("id"):
                self.by_id[attrs["id"]] = self.current
            return
        form = self.owner(attrs)
        if form is None or not attrs.get("name") and tag != "option":
            if tag == "option" and self.select:
                self.option(attrs)
            return
        if tag == "input":
            kind = attrs.get("type", "text").lower()
            if kind in ("checkbox", "radio"):
                checked = "checked" in attrs
                form.add(attrs["name"], attrs.get("value", "on"), checked, kind == "checkbox")
            elif kind not in ("submit", "button", "image", "reset", "file"):
                form.add(attrs["name"], attrs.get("value", ""))
        elif tag == "button" and attrs.get("type", "submit") == "submit":
            form.add(attrs["name"], attrs.get("value", ""), submitted=False)
        elif tag == "select":
            self.select, self.select_first = (form, attrs["name"]), None
            form.add(attrs["name"], None, submitted=False)
        elif tag == "textarea":
            self.textarea = (form, attrs["name"], [])

    def option(self, attrs):
        form, name = self.select
        if self.select_first is None:
            self.select_first = attrs.get("value", "")
        if "selected" in attrs:
            form.fields.append((name, attrs.get("value", "")))

    def handle_data(self, data):
        if self.textarea:
            self.textarea[2].append(data)

    def handle_endtag(self, tag):
        if tag == "form":
            self.current = None
        elif tag == "select" and self.select:
            form, name = self.select
            if not any(n == name for n, _ in form.fields) and self.select_first is not None:
                form.fields.append((name, self.select_first))
            self.select = None
        elif tag == "textarea" and self.textarea:
            form, name, text = self.textarea
            form.add(name, "".join(text))
            self.textarea = None


def forms_of(response, page_path):
    if "html" not in response.get("Content-Type", ""):
        return []
    parser = FormParser(page_path)
    parser.feed(response.content.decode())
    return parser.forms


# --- state ----------------------------------------------------------------------------------------


def tracked_models():
    return [
        model
        for model in apps.get_models(include_auto_created=True)
        if model._meta.label_lower not in EXCLUDED_MODELS and model._meta.managed
    ]


class WriteSpy:
    """Notes each INSERT, UPDATE or DELETE this connection sends to a tracked table, so the
    (slow) whole-database fingerprint is only taken when something may have changed."""

    WRITE = re.compile(r'\s*(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM)\s+"?(\w+)', re.I)

    def __init__(self):
        self.tables = {model._meta.db_table for model in tracked_models()}
        self.dirty = False

    def __call__(self, execute, sql, params, many, context):
        match = self.WRITE.match(sql)
        if match and match.group(1) in self.tables:
            self.dirty = True
        return execute(sql, params, many, context)


def fingerprint():
    """A digest of every row of every tracked table, and of the htpasswd file's bytes."""
    digest = hashlib.sha256(Path(django_settings.HTPASSWD_PATH).read_bytes())
    for model in tracked_models():
        digest.update(model._meta.label.encode())
        digest.update(repr(list(model.objects.order_by("pk").values_list())).encode())
    return digest.hexdigest()


def counts():
    return {model._meta.label: model.objects.count() for model in tracked_models()}


# --- the sweep ------------------------------------------------------------------------------------


class Sweep:
    def __init__(self, seed, role, client):
        self.seed, self.role, self.client = seed, role, client
        self.problems, self.requests, self.accepted = [], 0, []
        self.baseline, self.baseline_counts = fingerprint(), counts()
        self.htpasswd = Path(django_settings.HTPASSWD_PATH)
        self.htpasswd_bytes = self.htpasswd.read_bytes()
        self.rule = RetentionRule.objects.get(pk=seed.rule_pk)
        self.spy = WriteSpy()

    def problem(self, what, text):
        if len(self.problems) < 200:
            self.problems.append(f"[{self.role}] {what}: {text}")

    def send(self, method, path, data=None, what=None):
        """One request; every check on the answer, then on the state."""
        what = what or f"{method.upper()} {path[:120]} {_short(data)}"
        self.requests += 1
        self.spy.dirty = False
        try:
            with connection.execute_wrapper(self.spy):
                if method == "get":
                    response = self.client.get(path, data or {})
                else:
                    response = self.client.post(path, data or {})
        except Exception:
            self.problem(what, "raised " + traceback.format_exc(limit=-3))
            return None
        self.check_answer(response, what)
        self.check_state(method, path, data, response, what)
        return response

    def check_answer(self, response, what):
        status = response.status_code
        if status >= 500:
            self.problem(what, f"HTTP {status}")
        body = (
            b"".join(response.streaming_content) if response.streaming else response.content
        ).decode(errors="replace")
        content_type = response.get("Content-Type", "")
        if SCRIPT in body and "text/csv" not in content_type:
            self.problem(what, f"reflects {SCRIPT} unescaped ({content_type})")
        location = response.get("Location", "")
        if location and not _is_local(location):
            self.problem(what, f"redirects off the site to {location[:80]}")
        if any(ch in location for ch in "\r\n"):
            self.problem(what, "a line break in the Location header")

    def check_state(self, method, path, data, response, what):
        if not self.spy.dirty and self.htpasswd.read_bytes() == self.htpasswd_bytes:
            return
        if fingerprint() == self.baseline:
            return
        if self.accept_rule_edit(method, path, data, response, what):
            return
        self.problem(what, "changed the state: " + _diff(self.baseline_counts, counts()))
        self.reset()

    def accept_rule_edit(self, method, path, data, response, what):
        """A hostile but valid name or keep-regex saved exactly as typed (and a checkbox given
        any value counts as ticked, as in HTML), audited once, shown escaped."""
        edit = reverse("registry_admin:retention-rule-edit", args=[self.rule.pk])
        if method != "post" or path != edit or response.status_code != 302:
            return False
        saved = RetentionRule.objects.get(pk=self.rule.pk)
        expected = {name: getattr(self.rule, name) for name in RULE_FIELDS}
        expected |= {name: data[name].strip() for name in ("name", "keep_regex")}
        expected["enabled"] = bool(data.get("enabled"))
        if {name: getattr(saved, name) for name in RULE_FIELDS} != expected:
            return False
        audit = list(AuditEvent.objects.filter(action=RULE_SAVED))
        if len(audit) != 1 or json.loads(audit[0].raw).get("rule") != saved.name:
            return False
        for page in (reverse("registry_admin:retention"), reverse("registry_admin:audit")):
            if SCRIPT in self.client.get(page).content.decode():
                self.problem(what, f"{page} shows the saved rule unescaped")
        self.accepted.append(what)
        self.reset()
        return fingerprint() == self.baseline

    def reset(self):
        """Put the seeded rule back and drop what the accepted edit recorded."""
        AuditEvent.objects.filter(action=RULE_SAVED).delete()
        RetentionRule.objects.filter(pk=self.rule.pk).update(
            **{
                f.attname: getattr(self.rule, f.attname)
                for f in RetentionRule._meta.concrete_fields
            }
        )
        self.baseline = fingerprint()

    # -- what gets swept --

    def crawl(self):
        """The forms of every page this role can GET, without duplicates."""
        forms = {}
        for request in page_requests(self.seed):
            if request.method != "GET":
                continue
            response = self.send("get", request.path)
            for form in forms_of(response, request.path) if response else []:
                forms.setdefault(form.key(), form)
        return list(forms.values())

    def confirmation_forms(self, forms):
        """Forms of the pages that a first POST (an unchanged form) answers with."""
        found, seen = {}, {form.key() for form in forms}
        for form in forms:
            if form.method != "post" or not _endpoint(form.action).endswith(CONFIRMATION_ENDPOINTS):
                continue
            response = self.send("post", form.action, form.ticked().data())
            for inner in forms_of(response, form.action) if response else []:
                if inner.method == "post" and inner.key() not in seen:
                    found.setdefault(inner.key(), inner)
        return list(found.values())

    def sweep_form(self, form, one_at_a_time=True, skip=()):
        """Each value in every field at once, then (optionally) in one field at a time."""
        for name, value in HOSTILE.items():
            if not form.editable:
                return
            self.send(form.method, form.action, form.data(value), f"{_label(form)} all={name}")
            if not one_at_a_time:
                continue
            for field_name in form.editable:
                if field_name not in skip:
                    data = form.data(value, only=field_name)
                    self.send(form.method, form.action, data, f"{_label(form)} {field_name}={name}")

    def sweep_query(self, forms):
        """Each query parameter a view reads, with each value, where no form field covers it
        already (a GET form's fields are its page's query parameters)."""
        targets = {}
        for request in page_requests(self.seed):
            if request.method == "GET":
                split = urlsplit(request.path)
                targets[split.path] = ("get", dict(parse_qsl(split.query)), {})
        for form in forms:
            split = urlsplit(form.action)
            if split.query and form.method == "post":
                targets[split.path] = ("post", dict(parse_qsl(split.query)), form.data())
        covered = {
            (urlsplit(f.action).path, n) for f in forms if f.method == "get" for n in f.names
        }
        for path, (method, query, body) in targets.items():
            for param in sorted((set(query) | _params_read_by(path)) - {None}):
                if (path, param) in covered:
                    continue
                for name, value in HOSTILE.items():
                    url = path + "?" + _urlencode({**query, param: value})
                    self.send(method, url, body, f"{method.upper()} {path}?{param}={name}")

    def sweep_paths(self):
        """Every URL pattern with each argument in turn replaced by each hostile value; POST
        too where the view acts on a POST."""
        for route, arguments in _routes_with_arguments():
            real = _real_arguments(self.seed, route)
            methods = ("get", "post") if route.endswith(POST_ROUTES) else ("get",)
            for argument, converter in arguments.items():
                values = dict(HOSTILE)
                if converter == "int":
                    values |= {f"number {v[:6]}": v for v in HOSTILE_NUMBERS}
                for name, value in values.items():
                    path = _fill(route, {**real, argument: value})
                    for method in methods:
                        self.send(method, path, {}, f"{method.upper()} {route} {argument}={name}")

    def sweep_webhook(self):
        """Hostile bodies: refused without the token; with it, stored as rejected deliveries,
        byte for byte (the one change the sweep accepts here, undone after the check)."""
        url = reverse("registry_admin:registry-events")
        for name, value in HOSTILE.items():
            self.send("post", url, {"events": value}, f"webhook without token {name}")
            response = self.client.post(
                url,
                data=value.encode(),
                content_type="application/vnd.docker.distribution.events.v1+json",
                headers={"authorization": f"Bearer {NOTIFICATIONS_TOKEN}"},
            )
            self.requests += 1
            self.check_answer(response, f"webhook {name}")
            stored = list(RejectedDelivery.objects.exclude(pk__in=self.rejected_before))
            if response.status_code != 200 or response.json().get("rejected") is not True:
                self.problem(f"webhook {name}", f"HTTP {response.status_code}: not rejected")
            elif len(stored) != 1 or bytes(stored[0].body) != value.encode():
                self.problem(f"webhook {name}", "the body was not stored verbatim, once")
            RejectedDelivery.objects.exclude(pk__in=self.rejected_before).delete()
            if fingerprint() != self.baseline:
                self.problem(f"webhook {name}", "changed more than its rejected delivery")
                self.reset()

    def assert_state_as_seeded(self, what):
        """The backstop: the whole-database fingerprint, whatever the write spy saw."""
        if fingerprint() != self.baseline:
            self.problem(what, "changed the state: " + _diff(self.baseline_counts, counts()))


# --- helpers ------------------------------------------------------------------------------------


def _short(data):
    if not data:
        return ""
    return json.dumps({k: (v[:20] if isinstance(v, str) else v) for k, v in data.items()})[:120]


def _label(form):
    return f"{form.method.upper()} {urlsplit(form.action).path}"


def _endpoint(action):
    try:
        return resolve(urlsplit(action).path).url_name or ""
    except Exception:
        return ""


def _is_local(location):
    split = urlsplit(location)
    return (
        not split.scheme
        and not split.netloc
        and location.startswith("/")
        and not (location.startswith(("//", "/\\")))
    )


def _urlencode(params):
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())


def _diff(before, after):
    return ", ".join(
        f"{k} {before.get(k)}->{v}" for k, v in after.items() if before.get(k) != v
    ) or ("same counts, changed rows")


def _params_read_by(path):
    """Query parameters the view module behind `path` reads by name (request.GET.get("x"))."""
    try:
        module = inspect.getmodule(inspect.unwrap(resolve(path).func))
        source = inspect.getsource(module)
    except Exception:
        return set()
    return set(re.findall(r"request\.GET\.(?:get|getlist)\(\s*[\"'](\w+)[\"']", source))


ROUTE_ARGUMENT = re.compile(r"<(?:(\w+):)?(\w+)>")


def _routes_with_arguments():
    """(route, {argument: converter}) for every URL pattern that takes arguments."""
    found = []

    def walk(patterns, prefix):
        for entry in patterns:
            if isinstance(entry, URLResolver):
                if entry.namespace != "admin":
                    walk(entry.url_patterns, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                route = prefix + str(entry.pattern)
                arguments = {name: conv or "str" for conv, name in ROUTE_ARGUMENT.findall(route)}
                if arguments:
                    found.append(("/" + route, arguments))

    walk(get_resolver().url_patterns, "")
    return found


def _real_arguments(seed, route):
    """Real values for every argument of `route`."""
    return {
        "name": seed.repository,
        "repository": seed.repository,
        "tag": seed.tag,
        "digest": seed.digest,
        "pk": str(seed.audit_pk if route.startswith("/audit/") else seed.rule_pk),
        "kind": "sync",
    }


def _fill(route, values):
    return ROUTE_ARGUMENT.sub(lambda m: quote(values[m.group(2)], safe=""), route)


# --- the tests ------------------------------------------------------------------------------------


@live_fixture  # seed_portal starts a registry
def seeded(tmp_path, settings, admin_client):
    settings.HTPASSWD_BCRYPT_ROUNDS = 4
    seed = seed_portal(tmp_path, settings, admin_client)
    for kind in worker.JOBS:
        worker.request_run(kind)  # a pending run of every kind: asking again adds none
    yield seed
    seed.close()


@pytest.fixture
def quiet_logs():
    """Thousands of refused requests would log thousands of warnings (with tracebacks)."""
    names = ("django.request", "django.security", "registry_admin", "axes")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


def sweep_as(seed, role, client, extra_forms=(), one_at_a_time=True):
    sweep = Sweep(seed, role, client)
    own_forms = sweep.crawl()
    forms = list({f.key(): f for f in [*own_forms, *extra_forms]}.values())
    for form in forms:
        sweep.sweep_form(form, one_at_a_time)
    for form in sweep.confirmation_forms(forms):
        sweep.sweep_form(form, one_at_a_time, skip=NEVER_GATING)
    sweep.sweep_query(forms)
    sweep.sweep_paths()
    sweep.assert_state_as_seeded("after the sweep")
    return sweep, own_forms


@pytest.mark.django_db(transaction=True)
def test_hostile_input_changes_nothing_and_never_fails(seeded, admin_client, quiet_logs):
    admin, admin_forms = sweep_as(seeded, "admin", admin_client)
    assert len(admin_forms) >= 10, [f.key() for f in admin_forms]
    admin.rejected_before = set(RejectedDelivery.objects.values_list("pk", flat=True))
    admin.sweep_webhook()

    # The viewer submits the admin's forms too: refused before any field is read, so every
    # field at once is enough (the viewer's own forms are the GET filters the admin swept
    # field by field).
    viewer_client = Client()
    viewer_client.force_login(make_viewer())
    viewer, _ = sweep_as(seeded, "viewer", viewer_client, admin_forms, one_at_a_time=False)

    anonymous = Sweep(seeded, "anonymous", Client())
    login = reverse("login")
    for form in forms_of(anonymous.client.get(login), login):
        anonymous.sweep_form(form)
    anonymous.sweep_paths()
    anonymous.assert_state_as_seeded("after the anonymous sweep")

    problems = admin.problems + viewer.problems + anonymous.problems
    print(
        f"requests: admin {admin.requests}, viewer {viewer.requests}, anonymous "
        f"{anonymous.requests}; accepted rule edits: {len(admin.accepted)}"
    )
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:60])
