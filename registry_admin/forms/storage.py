"""The storage page's repository table filter and the untagged-manifest prune request."""

from django import forms

from .repositories import printable_filter

# Sort keys offered in the table's headers: key -> the snapshot row's field.
SORTS = {
    "name": "name",
    "referenced": "referenced_bytes",
    "unique": "unique_bytes",
    "shared": "shared_bytes",
    "reclaimable": "reclaimable_bytes",
    "blobs": "blob_count",
    "manifests": "manifest_count",
}
SORT_CHOICES = [(key, key) for key in SORTS] + [(f"-{key}", f"-{key}") for key in SORTS]


class RepositoryTableForm(forms.Form):
    q = forms.CharField(label="Filter repositories", required=False, max_length=255)
    sort = forms.ChoiceField(required=False, choices=SORT_CHOICES)

    def clean_q(self):
        return printable_filter(self.cleaned_data["q"])


class PruneForm(forms.Form):
    repository = forms.CharField(required=False, max_length=255)

    def clean_repository(self):
        text = self.cleaned_data["repository"]
        if any(not char.isprintable() for char in text):
            raise forms.ValidationError("Control characters are not allowed.", code="control")
        return text.strip()
