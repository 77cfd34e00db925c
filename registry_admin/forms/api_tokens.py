"""The profile page's form for a new API token."""

from django import forms

from .. import api_tokens


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        label="Name", max_length=api_tokens.MAX_NAME_LENGTH, help_text="What it is for (ci-main)."
    )
    scopes = forms.MultipleChoiceField(
        label="Scopes", widget=forms.CheckboxSelectMultiple, choices=()
    )
    days = forms.IntegerField(
        label="Expires after (days)",
        min_value=1,
        max_value=api_tokens.MAX_DAYS,
        initial=api_tokens.DEFAULT_DAYS,
    )

    def __init__(self, *args, owner, **kwargs):
        super().__init__(*args, **kwargs)
        # Only what the owner's role allows is offered; the service checks again.
        self.fields["scopes"].choices = [(s, s) for s in api_tokens.allowed_scopes(owner)]

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if not name.isprintable():
            raise forms.ValidationError("Control characters are not allowed.")
        return name
