"""The retention rule form; the checks on patterns and regexes live on the model's fields."""

import unicodedata

from django import forms
from django.core.exceptions import ValidationError

from ..models import RetentionRule


class RetentionRuleForm(forms.ModelForm):
    error_messages = {
        "control_characters": "Use printable characters only.",
    }

    class Meta:
        model = RetentionRule
        fields = [
            "name",
            "repository_pattern",
            "keep_latest",
            "keep_regex",
            "delete_older_than_days",
            "not_pulled_for_days",
            "position",
            "enabled",
        ]
        labels = {
            "repository_pattern": "Repositories",
            "keep_latest": "Keep the newest N tags",
            "keep_regex": "Always keep tags matching",
            "delete_older_than_days": "Delete only tags older than (days)",
            "not_pulled_for_days": "Delete only tags not pulled for (days)",
            "position": "Order",
        }
        help_texts = {
            "keep_regex": "Always keep tags that fully match this regular expression (RE2 syntax: "
            "Python's without look-around or back-references), e.g. latest|stable|v\\d+\\.\\d+",
        }

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if any(unicodedata.category(ch).startswith("C") for ch in name):
            raise ValidationError(self.error_messages["control_characters"], code="control")
        return name

    def clean_repository_pattern(self):
        return self.cleaned_data["repository_pattern"].strip()
