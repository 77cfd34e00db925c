"""The filters of the repository list and of one repository's tags."""

from django import forms

from .. import browse


def printable_filter(text):
    """A filter's text without control characters (refused, not dropped), stripped."""
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise forms.ValidationError("Control characters are not allowed.", code="control")
    return text.strip()


class RepositoryFilterForm(forms.Form):
    q = forms.CharField(label="Search", required=False, max_length=browse.MAX_FILTER_LENGTH)
    sort = forms.ChoiceField(
        label="Sort by",
        required=False,
        choices=[(key, label) for key, (label, _) in browse.REPOSITORY_SORTS.items()],
    )
    empty = forms.BooleanField(label="Show empty repositories", required=False)

    def clean_q(self):
        return printable_filter(self.cleaned_data["q"])


class TagFilterForm(forms.Form):
    q = forms.CharField(label="Filter tags", required=False, max_length=browse.MAX_FILTER_LENGTH)
    sort = forms.ChoiceField(label="Sort by", required=False, choices=browse.TAG_SORTS.items())

    def clean_q(self):
        return printable_filter(self.cleaned_data["q"])
