import fnmatch
import functools
import logging
import re

import re2
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import models

logger = logging.getLogger(__name__)

PATTERN_MAX_LENGTH = 255
REGEX_MAX_LENGTH = 200
# Characters of a repository name plus the glob's * ? [ ] !
_PATTERN_RE = re.compile(r"[a-z0-9._/*?\[\]!-]+")


def validate_repository_pattern(value):
    validate_glob(
        value,
        _PATTERN_RE,
        "Use lowercase letters, digits, . _ - / and the wildcards * ? [ ] "
        "(for example team/* or *).",
    )


def validate_glob(value, characters, message):
    """A glob on repository names: only `characters`, and no empty, `.` or `..` path part."""
    components = (value or "").split("/")
    if not characters.fullmatch(value or "") or any(c in ("", ".", "..") for c in components):
        raise ValidationError(message, code="invalid_pattern")


def _optional_limit(maximum, help_text):
    """A rule's optional number: empty means no such condition."""
    return models.PositiveIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(maximum)], help_text=help_text
    )


def _re2_options():
    options = re2.Options()
    # Errors become ValidationError messages; RE2 would also print them to stderr.
    options.log_errors = False
    return options


_RE2_OPTIONS = _re2_options()


@functools.lru_cache(maxsize=256)
def compile_keep_regex(value):
    """The expression compiled by RE2, whose matching time grows linearly with the tag whatever
    the pattern, so no expression can stall a page or a run; raises ValidationError."""
    if len(value) > REGEX_MAX_LENGTH:
        raise ValidationError(
            f"Keep the expression under {REGEX_MAX_LENGTH} characters.", code="regex_too_long"
        )
    try:
        return re2.compile(value, options=_RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        detail = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
        raise ValidationError(
            "This is not a regular expression the portal can run: %(error)s. Expressions are "
            "evaluated by RE2, which has no look-ahead or look-behind ((?=…), (?!…)), no "
            "back-references (\\1), no possessive repeats (a++) and no \\Z (use $), and allows "
            "repeat counts up to 1000.",
            code="invalid_regex",
            params={"error": detail[:200]},
        ) from None


def validate_keep_regex(value):
    """An expression RE2 compiles (RE2 syntax: Python's, less back-references and look-around)."""
    if value:
        compile_keep_regex(value)


class RetentionRule(models.Model):
    """Which tags of which repositories to delete, evaluated by `registry_admin.retention`.

    Each repository is governed by the FIRST enabled rule (by `position`, then id) whose
    `repository_pattern` matches its name. Within it, a tag is deleted only when every limit
    that is set agrees: it does not fully match `keep_regex`, it is not among the
    `keep_latest` newest of the remaining tags, and it is older than `delete_older_than_days`.
    """

    name = models.CharField(max_length=100, unique=True)
    position = models.PositiveIntegerField(
        default=100,
        validators=[MaxValueValidator(1_000_000)],
        help_text="Rules are tried in this order; the first whose pattern matches a repository "
        "governs it.",
    )
    repository_pattern = models.CharField(
        max_length=PATTERN_MAX_LENGTH,
        validators=[validate_repository_pattern],
        help_text="A glob on repository names: * matches any characters including /, "
        "? one character.",
    )
    keep_latest = _optional_limit(
        100_000, "Always keep this many newest tags (empty: no such limit)."
    )
    keep_regex = models.CharField(
        max_length=REGEX_MAX_LENGTH,
        blank=True,
        validators=[validate_keep_regex],
        help_text="Always keep tags that fully match this regular expression (RE2 syntax), "
        "e.g. latest|stable|v\\d+\\.\\d+\\.\\d+",
    )
    delete_older_than_days = _optional_limit(
        36_500, "Only delete tags older than this many days (empty: any age)."
    )
    not_pulled_for_days = _optional_limit(
        36_500,
        "Only delete tags nobody pulled for this many days (never pulled: counted from the "
        "push; empty: pulls do not matter).",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self):
        return self.name

    def clean(self):
        super().clean()
        if (
            self.keep_latest is None
            and self.delete_older_than_days is None
            and self.not_pulled_for_days is None
        ):
            raise ValidationError(
                "Set “keep the newest N tags”, “delete tags older than D days”, “not pulled "
                "for D days”, or several: "
                "a rule with neither would delete every tag not matching the regex.",
                code="no_limit",
            )

    def matches_repository(self, name):
        return fnmatch.fnmatchcase(name, self.repository_pattern)

    @property
    def keep_regex_error(self):
        """Why a stored expression cannot run (saved before RE2 evaluated them), or ""."""
        try:
            validate_keep_regex(self.keep_regex)
        except ValidationError as exc:
            return " ".join(exc.messages)
        return ""

    def keeps_by_regex(self, tag):
        if not self.keep_regex:
            return False
        try:
            return compile_keep_regex(self.keep_regex).fullmatch(tag) is not None
        except ValidationError:
            # A rule whose keep expression cannot run must not delete what it meant to keep.
            logger.warning("retention rule %s: keep regex cannot run; keeping every tag", self.pk)
            return True
