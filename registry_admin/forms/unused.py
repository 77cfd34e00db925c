"""The unused-images report's one field: how many days without a pull make an image unused."""

from django import forms

MAX_DAYS = 36_500


class UnusedForm(forms.Form):
    days = forms.IntegerField(
        label="Not pulled for (days)", min_value=0, max_value=MAX_DAYS, required=False
    )
