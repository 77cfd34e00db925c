import fnmatch
import re
from re import _parser as regex_parser  # the stdlib's own parser, to spot nested repeats

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import models

PATTERN_MAX_LENGTH = 255
REGEX_MAX_LENGTH = 200
# Characters of a repository name plus the glob's * ? [ ] !
_PATTERN_RE = re.compile(r"[a-z0-9._/*?\[\]!-]+")


def validate_repository_pattern(value):
    components = (value or "").split("/")
    if not _PATTERN_RE.fullmatch(value or "") or any(c in ("", ".", "..") for c in components):
        raise ValidationError(
            "Use lowercase letters, digits, . _ - / and the wildcards * ? [ ] "
            "(for example team/* or *).",
            code="invalid_pattern",
        )


def validate_keep_regex(value):
    """A Python regular expression that compiles and cannot take exponential time.

    Tags are at most 128 characters, but a nested repeat such as (a+)+ can still need 2^128
    steps on one of them; Python's `re` has no timeout, so such patterns are refused outright.
    """
    if not value:
        return
    if len(value) > REGEX_MAX_LENGTH:
        raise ValidationError(
            f"Keep the expression under {REGEX_MAX_LENGTH} characters.", code="regex_too_long"
        )
    try:
        parsed = regex_parser.parse(value)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ValidationError(
            "This is not a valid regular expression: %(error)s.",
            code="invalid_regex",
            params={"error": str(exc)},
        ) from None
    if _can_backtrack_exponentially(parsed, inside_repeat=False):
        raise ValidationError(
            "A repeated group that contains another repeat or an alternation, like (a+)+, "
            "(a?)* or (ab|a)+, can take forever on some tags: rewrite it without the nesting "
            "(for example [a-z0-9.-]+ instead of ([a-z]+|[0-9]+)+).",
            code="regex_catastrophic",
        )
    if _count_long_repeats(parsed) > MAX_LONG_REPEATS:
        # Measured: fullmatch of .*.*.*.*.*x on a 128-character tag takes 0.4 s, with six 21 s.
        raise ValidationError(
            f"Use at most {MAX_LONG_REPEATS} open-ended repeats (*, +, {{n,}}): each one "
            "multiplies the time a non-matching tag can take.",
            code="regex_too_many_repeats",
        )


MAX_LONG_REPEATS = 4
_REPEATS = {regex_parser.MAX_REPEAT, regex_parser.MIN_REPEAT, regex_parser.POSSESSIVE_REPEAT}


def _can_backtrack_exponentially(parsed, inside_repeat):
    """True when a variable-length repeat or an alternation sits inside a repeat that can run
    many times: the shapes that make a backtracking engine take exponential time."""
    for op, arg in parsed:
        inner = inside_repeat
        if op in _REPEATS:
            low, high, body = arg
            if inside_repeat and low != high:
                return True
            inner = inside_repeat or high == regex_parser.MAXREPEAT or high > 10
            children = [body]
        elif op == regex_parser.BRANCH:
            if inside_repeat:
                return True
            children = arg[1]
        elif op == regex_parser.SUBPATTERN:
            children = [arg[-1]]
        elif op in (regex_parser.ASSERT, regex_parser.ASSERT_NOT):
            children = [arg[1]]
        elif op == regex_parser.ATOMIC_GROUP:
            children = [arg]
        else:
            continue
        if any(_can_backtrack_exponentially(child, inner) for child in children):
            return True
    return False


def _count_long_repeats(parsed):
    """How many variable repeats that can run more than 10 times the pattern holds."""
    count = 0
    for op, arg in parsed:
        if op in _REPEATS:
            low, high, body = arg
            long = high == regex_parser.MAXREPEAT or high > 10
            count += (long and low != high) + _count_long_repeats(body)
        elif op == regex_parser.BRANCH:
            count += sum(_count_long_repeats(branch) for branch in arg[1])
        elif op == regex_parser.SUBPATTERN:
            count += _count_long_repeats(arg[-1])
        elif op in (regex_parser.ASSERT, regex_parser.ASSERT_NOT):
            count += _count_long_repeats(arg[1])
        elif op == regex_parser.ATOMIC_GROUP:
            count += _count_long_repeats(arg)
    return count


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
    keep_latest = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(100_000)],
        help_text="Always keep this many newest tags (empty: no such limit).",
    )
    keep_regex = models.CharField(
        max_length=REGEX_MAX_LENGTH,
        blank=True,
        validators=[validate_keep_regex],
        help_text="Always keep tags that fully match this Python regular expression, "
        "e.g. latest|stable|v\\d+\\.\\d+\\.\\d+",
    )
    delete_older_than_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(36_500)],
        help_text="Only delete tags older than this many days (empty: any age).",
    )
    not_pulled_for_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(36_500)],
        help_text="Only delete tags nobody pulled for this many days (never pulled: counted "
        "from the push; empty: pulls do not matter).",
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

    def keeps_by_regex(self, tag):
        return bool(self.keep_regex) and re.fullmatch(self.keep_regex, tag) is not None
