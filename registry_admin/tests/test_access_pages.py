"""The Access page's forms: each label names its own field, and each form posts what it shows.

The page holds five forms (the check, a rule, a group, a robot, and a remove button per row);
the group and robot forms both have a `name` field, which once gave two inputs the id
`id_name`, so the robot's Name label pointed at the group's field (issue 27 item 9).
"""

from collections import Counter
from html.parser import HTMLParser

import pytest
from django.urls import reverse

from registry_admin import htpasswd
from registry_admin.models import AccessGroup, AccessRule, RobotAccount

PAGE = reverse("registry_admin:access")


class PageForms(HTMLParser):
    """Every id on the page, and per form its action, fields (name -> first id), the ids of its
    fields and its labels' targets."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids = Counter()
        self.forms = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids[attrs["id"]] += 1
        if tag == "form":
            form = {"action": attrs.get("action"), "fields": {}, "ids": set(), "labels": set()}
            self.forms.append(form)
        elif self.forms and tag in ("input", "textarea", "select") and attrs.get("name"):
            self.forms[-1]["fields"].setdefault(attrs["name"], attrs.get("id"))
            self.forms[-1]["ids"].add(attrs.get("id"))
        elif self.forms and tag == "label" and attrs.get("for"):
            self.forms[-1]["labels"].add(attrs["for"])


def parse(response):
    parser = PageForms()
    parser.feed(response.content.decode())
    return parser


def form_for(parsed, url_name):
    return next(f for f in parsed.forms if f["action"] == reverse(url_name))


@pytest.fixture
def htpasswd_file(settings, tmp_path):
    settings.HTPASSWD_PATH = str(tmp_path / "htpasswd")
    settings.HTPASSWD_BCRYPT_ROUNDS = 4


def assert_labels_name_their_own_fields(parsed):
    assert [i for i, n in parsed.ids.items() if n > 1] == []
    for form in parsed.forms:
        # A label's field is in the label's own form (a field elsewhere is another form's), and
        # every field with an id (hidden inputs have none) has a label.
        assert form["labels"] == form["ids"] - {None}, form


@pytest.mark.django_db
def test_each_label_names_its_own_field(admin_client, htpasswd_file):
    parsed = parse(admin_client.get(PAGE, {"user": "dev", "repository": "team/app"}))
    assert_labels_name_their_own_fields(parsed)
    robot = form_for(parsed, "registry_admin:access-robot-create")["fields"]
    group = form_for(parsed, "registry_admin:access-group-save")["fields"]
    assert robot["name"] != group["name"]

    # The page shown again with a form's errors keeps them apart too.
    refused = admin_client.post(
        reverse("registry_admin:access-robot-create"), {"name": "a:b", "days": 3}
    )
    assert refused.status_code == 400
    assert_labels_name_their_own_fields(parse(refused))


@pytest.mark.django_db
def test_every_form_posts_the_fields_it_shows(admin_client, htpasswd_file):
    parsed = parse(admin_client.get(PAGE))
    values = {
        "registry_admin:access-rule-save": {
            "subject": "dev",
            "pattern": "team/**",
            "actions": ["pull", "push"],
        },
        "registry_admin:access-group-save": {"name": "team", "members": "dev ops"},
        "registry_admin:access-robot-create": {"name": "ci", "days": "30", "description": "CI"},
    }
    for url_name, data in values.items():
        fields = form_for(parsed, url_name)["fields"]
        assert set(data) <= set(fields), (url_name, fields)
        assert admin_client.post(reverse(url_name), data).status_code in (200, 302), url_name
    assert AccessRule.objects.get(subject="dev").actions == "pull,push"
    assert AccessGroup.objects.get(name="team").member_list() == ["dev", "ops"]
    assert RobotAccount.objects.filter(username="robot-ci").exists()
    assert htpasswd.read_users().get("robot-ci") is not None

    # The remove buttons, as each table row renders them.
    parsed = parse(admin_client.get(PAGE))
    for url_name, data in {
        "registry_admin:access-rule-remove": {"subject": "dev", "pattern": "team/**"},
        "registry_admin:access-robot-remove": {"username": "robot-ci"},
    }.items():
        assert set(data) <= set(form_for(parsed, url_name)["fields"]), url_name
        assert admin_client.post(reverse(url_name), data).status_code == 302
    assert not AccessRule.objects.exists() and not RobotAccount.objects.exists()
