from django import forms

from ..models.access import ACTIONS

ACTION_CHOICES = [(a, a) for a in ACTIONS]


class AccessPageForm(forms.Form):
    """A form of the Access page, which shows several at once: its ids start with `id_<id_part>_`
    so that each label points at its own form's field (the group and robot forms both have a
    `name`). A `prefix` would do the same but rename the posted fields."""

    id_part = None

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", f"id_{self.id_part}_%s")
        super().__init__(*args, **kwargs)


class RuleForm(AccessPageForm):
    id_part = "rule"

    subject = forms.CharField(
        max_length=65, help_text="A registry user, @group, * (every registry user) or anonymous."
    )
    pattern = forms.CharField(max_length=255, help_text="team/app, team/* (one level), team/**")
    actions = forms.MultipleChoiceField(
        choices=ACTION_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: this rule denies.",
    )


class RuleDeleteForm(forms.Form):
    subject = forms.CharField(max_length=65)
    pattern = forms.CharField(max_length=255)


class GroupForm(AccessPageForm):
    id_part = "group"

    name = forms.CharField(max_length=65, help_text="Without @; the group admins may do anything.")
    members = forms.CharField(
        required=False,
        max_length=70000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Registry user names, separated by spaces or lines. Empty deletes the group.",
    )


class RobotForm(AccessPageForm):
    id_part = "robot"

    name = forms.CharField(max_length=64, help_text="Becomes robot-NAME.")
    days = forms.IntegerField(min_value=1, max_value=3650, initial=90, label="Expires after (days)")
    description = forms.CharField(max_length=200, required=False)


class RobotDeleteForm(forms.Form):
    username = forms.CharField(max_length=64)


class CheckForm(AccessPageForm):
    id_part = "check"

    user = forms.CharField(
        max_length=64,
        required=False,
        help_text="Empty: an anonymous client.",
        label="Registry user",
    )
    repository = forms.CharField(max_length=255)
