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
        choices=[(key, sort.label) for key, sort in browse.REPOSITORY_SORTS.items()],
    )
    empty = forms.BooleanField(label="Show empty repositories", required=False)
    # Page links: a cursor (browse.PageCursor), or `page=last`.
    after = forms.CharField(required=False, max_length=browse.PageCursor.MAX_LENGTH)
    before = forms.CharField(required=False, max_length=browse.PageCursor.MAX_LENGTH)
    page = forms.CharField(required=False, max_length=12)

    def clean_q(self):
        return printable_filter(self.cleaned_data["q"])

    def clean(self):
        cleaned = super().clean()
        sort = cleaned.get("sort") or "name"
        for name in ("after", "before"):
            if cleaned.get(name):
                try:
                    browse.PageCursor.decode(sort, cleaned[name])
                except ValueError:
                    self.add_error(
                        name,
                        "This page link is not valid (cut short, or made for another sort): "
                        "showing the first page.",
                    )
        if cleaned.get("page") not in ("", "1", "last", None):
            # A numbered page (a link saved by an earlier version) would cost a count and an offset.
            self.add_error(
                "page", "Pages are no longer numbered (use Next and Previous): showing the first."
            )
        return cleaned


class TagFilterForm(forms.Form):
    q = forms.CharField(label="Filter tags", required=False, max_length=browse.MAX_FILTER_LENGTH)
    sort = forms.ChoiceField(label="Sort by", required=False, choices=browse.TAG_SORTS.items())
    referrers = forms.BooleanField(
        label="Show signature, SBOM and attestation tags", required=False
    )

    def clean_q(self):
        return printable_filter(self.cleaned_data["q"])
