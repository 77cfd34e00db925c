from django import forms

from ..models.access import ACTIONS

ACTION_CHOICES = [(a, a) for a in ACTIONS]


class RuleForm(forms.Form):
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


class GroupForm(forms.Form):
    name = forms.CharField(max_length=65, help_text="Without @; the group admins may do anything.")
    members = forms.CharField(
        required=False,
        max_length=70000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Registry user names, separated by spaces or lines. Empty deletes the group.",
    )


class RobotForm(forms.Form):
    name = forms.CharField(max_length=64, help_text="Becomes robot-NAME.")
    days = forms.IntegerField(min_value=1, max_value=3650, initial=90, label="Expires after (days)")
    description = forms.CharField(max_length=200, required=False)


class RobotDeleteForm(forms.Form):
    username = forms.CharField(max_length=64)


class CheckForm(forms.Form):
    user = forms.CharField(
        max_length=64,
        required=False,
        help_text="Empty: an anonymous client.",
        label="Registry user",
    )
    repository = forms.CharField(max_length=255)
