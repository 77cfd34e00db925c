from django import forms

from ..cli_secrets import MAX_DAYS, MAX_NAME


class CliSecretForm(forms.Form):
    name = forms.CharField(max_length=MAX_NAME, help_text="The machine it is for, e.g. laptop.")
    days = forms.IntegerField(
        min_value=1, max_value=MAX_DAYS, initial=90, help_text=f"1 to {MAX_DAYS}."
    )


class RevokeForm(forms.Form):
    secret = forms.IntegerField(min_value=1, max_value=2**62)
