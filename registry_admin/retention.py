"""Retention rules: which tags each rule deletes and keeps, and why; then the deletes.

`build_plan()` explains every decision. Given `live` (a deletes.LiveRepositories), as every dry
and real run does, it re-reads each governed repository's tags and digests from the registry
first: the index (fed by notifications a leaked token could forge) only supplies ages, and only
for a tag whose digest the registry confirms. Without `live` it plans from the index alone (the
cheap preview on the rules page). `apply_plan()` deletes the planned tags one at a time through
`deletes.delete_tags()` (one tag only, siblings kept; each tag's digest must still be the one the
plan saw, so a tag pushed again meanwhile is skipped), records each delete and a run summary in
the audit trail. `retention_job()` is the worker's job kind "retention".

How a tag's age is defined (README "Deleting tags and garbage collection"):
  1. the `created` date of its image config (for a multi-platform index: the newest platform's),
     when the index has it and it is not before 2000-01-01 — reproducible builds stamp
     1970-01-01, which says nothing about age;
  2. otherwise the time the tag got its current digest (`Tag.pushed_at`: the push notification's
     timestamp, or when a reconcile first saw the tag);
  3. otherwise the age is unknown and the tag is always kept.
"Newest" sorts by that time, then by push time, then by tag name (a-z first), so tags sharing one
image still get a fixed order.
"""

import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.utils import timezone

from . import deletes, pulls, referrers, registry, worker
from .models import AuditEvent, Manifest, PortalAction, Repository, RetentionRule, Tag
from .models.batches import batched

logger = logging.getLogger(__name__)

AGE_FLOOR = datetime(2000, 1, 1, tzinfo=UTC)
SUMMARY_TAG_LIMIT = 2000
# Repositories whose tags are loaded per query while planning.
PLAN_BATCH = 500

KEEP = "keep"
DELETE = "delete"


@dataclass(frozen=True)
class TagDecision:
    tag: str
    digest: str
    action: str  # KEEP or DELETE
    reason: str
    age_at: datetime | None
    age_source: str  # "image created", "pushed" or "unknown"

    @property
    def deletes(self):
        return self.action == DELETE


@dataclass
class RepositoryPlan:
    repository: str
    decisions: list

    @property
    def to_delete(self):
        return [d for d in self.decisions if d.deletes]

    @property
    def to_keep(self):
        return [d for d in self.decisions if not d.deletes]


@dataclass
class RulePlan:
    rule: RetentionRule
    repositories: list = field(default_factory=list)
    # Repositories the pattern matches that an earlier rule governs: (repository, rule name).
    shadowed: list = field(default_factory=list)

    @property
    def delete_count(self):
        return sum(len(r.to_delete) for r in self.repositories)

    @property
    def keep_count(self):
        return sum(len(r.to_keep) for r in self.repositories)


@dataclass
class Plan:
    rules: list
    now: datetime

    @property
    def delete_count(self):
        return sum(r.delete_count for r in self.rules)

    @property
    def keep_count(self):
        return sum(r.keep_count for r in self.rules)

    def targets(self):
        """The planned deletes as deletes.TagToDelete, rule by rule, repository by repository."""
        return [
            deletes.TagToDelete(
                repository=repo.repository,
                tag=decision.tag,
                expected_digest=decision.digest,
                reason=f"retention rule “{rule_plan.rule.name}”: {decision.reason}",
                bin_reason=f"retention:{rule_plan.rule.name}",
            )
            for rule_plan in self.rules
            for repo in rule_plan.repositories
            for decision in repo.to_delete
        ]


def rule_detail(rule):
    """A rule's settings as its audit rows record them."""
    return {
        "repository_pattern": rule.repository_pattern,
        "keep_latest": rule.keep_latest,
        "keep_regex": rule.keep_regex,
        "delete_older_than_days": rule.delete_older_than_days,
        "not_pulled_for_days": rule.not_pulled_for_days,
        "position": rule.position,
        "enabled": rule.enabled,
    }


def save_rule(actor, rule):
    """Save a rule a RetentionRuleForm validated (page or API), with its audit row."""
    rule.updated_by = actor[:150]
    with transaction.atomic():
        rule.save()
        AuditEvent.objects.log_portal_action(
            actor,
            PortalAction.RETENTION_RULE_SAVED,
            detail={"rule": rule.name, "id": rule.pk, **rule_detail(rule)},
        )
    return rule


def delete_rule(actor, rule):
    """Delete a rule (never any tag), with its audit row."""
    with transaction.atomic():
        AuditEvent.objects.log_portal_action(
            actor,
            PortalAction.RETENTION_RULE_DELETED,
            detail={"rule": rule.name, "id": rule.pk, **rule_detail(rule)},
        )
        rule.delete()


def describe_rule(rule):
    """One line saying what a rule does."""
    parts = []
    if rule.keep_latest is not None:
        parts.append(f"keep the {rule.keep_latest} newest")
    if rule.keep_regex:
        parts.append(f"keep tags matching {rule.keep_regex}")
    if rule.delete_older_than_days is not None:
        parts.append(f"delete only tags older than {rule.delete_older_than_days} days")
    else:
        parts.append("delete the rest")
    if getattr(rule, "not_pulled_for_days", None) is not None:
        parts.append(f"only tags not pulled for {rule.not_pulled_for_days} days")
    return f"{rule.repository_pattern}: " + "; ".join(parts)


@dataclass(frozen=True)
class IndexedTag:
    """What the plan needs of an index Tag row (read as plain values: plans cover many tags)."""

    name: str
    digest: str
    pushed_at: datetime | None
    created: datetime | None  # the image's, from its config; None until details are fetched
    # A referrer tag (signature, SBOM, attestation, fallback index): not a version.
    referrer: bool = False


def tag_age(tag):
    """(time, source) of an IndexedTag, as the module docstring defines."""
    created = tag.created
    if created is not None and created >= AGE_FLOOR:
        return created, "image created"
    if tag.pushed_at is not None:
        return tag.pushed_at, "pushed"
    return None, "unknown"


def build_plan(rules=None, now=None, live=None):
    """The Plan of the enabled rules (or `rules`, in their order); over the registry's live tags
    when `live` (a deletes.LiveRepositories) is given, else over the index."""
    now = now or timezone.now()
    if rules is None:
        rules = list(RetentionRule.objects.filter(enabled=True).order_by("position", "id"))
    plans = [RulePlan(rule=rule) for rule in rules]
    governed = []  # (repository id, name, governing RulePlan), in name order
    repositories = Repository.objects.filter(is_empty=False).order_by("name")
    for repo_id, name in repositories.values_list("id", "name").iterator():
        matching = [p for p in plans if p.rule.matches_repository(name)]
        if matching:
            governed.append((repo_id, name, matching[0]))
            for other in matching[1:]:
                other.shadowed.append((name, matching[0].rule.name))
    for batch in batched(governed, PLAN_BATCH):
        tags_by_repo = {}
        rows = Tag.objects.filter(repository_id__in=[r[0] for r in batch]).values_list(
            "repository_id", "name", "digest", "pushed_at", "manifest__created", "referrer_kind"
        )
        for repo_id, *fields, referrer_kind in rows:
            tags_by_repo.setdefault(repo_id, []).append(IndexedTag(*fields, bool(referrer_kind)))
        if live is not None:
            tags_by_repo = {
                repo_id: _live_tags(live, name, tags_by_repo.get(repo_id, []))
                for repo_id, name, _ in batch
            }
        for repo_id, name, rule_plan in batch:
            # Signatures, SBOMs, attestations are no versions: never counted nor deleted on
            # their own; they go with their image (deletes.delete_tag).
            versions = [t for t in tags_by_repo.get(repo_id, []) if not t.referrer]
            decisions = decide(rule_plan.rule, versions, now)
            decisions = limit_by_last_pull(rule_plan.rule, name, decisions, now)
            rule_plan.repositories.append(RepositoryPlan(repository=name, decisions=decisions))
    return Plan(rules=plans, now=now)


def _live_tags(live, repository, indexed):
    """IndexedTags of what the registry holds now; the index adds push times it can vouch for."""
    try:
        refs = live.get(repository).refs
    except registry.RegistryNotFound:
        return []
    by_name = {tag.name: tag for tag in indexed}
    created = dict(
        Manifest.objects.filter(digest__in={ref.digest for ref in refs.values()}).values_list(
            "digest", "created"
        )
    )
    present = {ref.digest for ref in refs.values()}
    tags = []
    for name, ref in refs.items():
        known = by_name.get(name)
        same = known is not None and known.digest == ref.digest
        pushed_at = known.pushed_at if same else None
        parts = referrers.referrer_tag_parts(name)
        # Named after an image the registry holds (cosign's tags, the fallback index), or
        # known to the index as a referrer (an OCI manifest with a subject).
        referrer = bool(parts and parts[0] in present) or (same and known.referrer)
        tags.append(IndexedTag(name, ref.digest, pushed_at, created.get(ref.digest), referrer))
    return tags


def decide(rule, tags, now):
    """A TagDecision for each IndexedTag, newest first, each with its reason."""
    decisions, candidates = [], []
    for tag in tags:
        age_at, source = tag_age(tag)
        if rule.keeps_by_regex(tag.name):
            decisions.append(
                TagDecision(
                    tag.name,
                    tag.digest,
                    KEEP,
                    f"matches the keep regex {rule.keep_regex}",
                    age_at,
                    source,
                )
            )
        elif age_at is None:
            decisions.append(
                TagDecision(
                    tag.name,
                    tag.digest,
                    KEEP,
                    "age unknown (no image created date and no push time yet)",
                    None,
                    source,
                )
            )
        else:
            candidates.append((tag, age_at, source))
    minimum = datetime.min.replace(tzinfo=UTC)
    # Newest first; equal times: later push first, then tag name a-z.
    candidates.sort(key=lambda c: c[0].name)
    candidates.sort(key=lambda c: (c[1], c[0].pushed_at or minimum), reverse=True)
    cutoff = now - timedelta(days=rule.delete_older_than_days or 0)
    for rank, (tag, age_at, source) in enumerate(candidates, start=1):
        action, reason = _judge(rule, rank, age_at, now, cutoff)
        decisions.append(TagDecision(tag.name, tag.digest, action, reason, age_at, source))
    # Shown newest first, unknown ages on top (the sort is stable: ties keep the order above).
    decisions.sort(key=lambda d: d.age_at or datetime.max.replace(tzinfo=UTC), reverse=True)
    return decisions


def limit_by_last_pull(rule, repository, decisions, now):
    """The rule's "not pulled for D days": a tag the other limits would delete is kept when it
    (or its image, by digest) had a real pull within D days, or, never pulled, was pushed
    within D days; the reason says which. See `pulls.last_pull_verdict`."""
    days = getattr(rule, "not_pulled_for_days", None)
    if days is None:
        return decisions
    verdict = pulls.last_pull_verdict(repository, days, now)
    limited = []
    for decision in decisions:
        if decision.action != DELETE:
            limited.append(decision)
            continue
        unused, why = verdict(decision.tag, decision.digest)
        limited.append(
            dataclasses.replace(
                decision,
                action=DELETE if unused else KEEP,
                reason=f"{decision.reason}; {why}" if unused and decision.reason else why,
            )
        )
    return limited


def _judge(rule, rank, age_at, now, cutoff):
    days_old = (now - age_at).days
    if rule.keep_latest is not None and rank <= rule.keep_latest:
        return KEEP, f"#{rank} newest, within the {rule.keep_latest} kept"
    if rule.delete_older_than_days is not None and age_at >= cutoff:
        return KEEP, f"{days_old} days old, not older than {rule.delete_older_than_days} days"
    reasons = []
    if rule.keep_latest is not None:
        reasons.append(f"#{rank} newest, beyond the {rule.keep_latest} kept")
    if rule.delete_older_than_days is not None:
        reasons.append(f"{days_old} days old, older than {rule.delete_older_than_days} days")
    return DELETE, "; ".join(reasons)


def apply_plan(plan, actor, on_progress=None, live=None):
    """Delete the plan's tags; record a retention.run audit row; return the summary dict."""
    targets = plan.targets()
    outcomes = deletes.delete_tags(actor, targets, on_progress=on_progress, live=live)
    summary = summarize(plan, outcomes)
    AuditEvent.objects.log_portal_action(actor, PortalAction.RETENTION_RUN, detail=summary)
    logger.info(
        "retention run by %s: %s deleted, %s failed, %s not attempted",
        actor,
        summary["deleted"],
        summary["failed"],
        summary["not_attempted"],
    )
    return summary


def summarize(plan, outcomes):
    counts = {
        state: sum(1 for o in outcomes if o.state == state)
        for state in (deletes.DELETED, deletes.ALREADY_GONE, deletes.FAILED, deletes.NOT_ATTEMPTED)
    }
    return {
        "dry_run": False,
        "rules": [r.rule.name for r in plan.rules],
        "planned": len(outcomes),
        "kept": plan.keep_count,
        "deleted": counts[deletes.DELETED],
        "already_gone": counts[deletes.ALREADY_GONE],
        "failed": counts[deletes.FAILED],
        "not_attempted": counts[deletes.NOT_ATTEMPTED],
        "reclaimable_bytes": sum(o.reclaimable_bytes for o in outcomes),
        "tags": [
            {
                "repository": o.repository,
                "tag": o.tag,
                "state": o.state,
                "message": o.message,
                "method": o.method,
                "reclaimable_bytes": o.reclaimable_bytes,
            }
            for o in outcomes[:SUMMARY_TAG_LIMIT]
        ],
        "truncated": len(outcomes) > SUMMARY_TAG_LIMIT,
    }


def tag_plans(plan, live):
    """{(repository, tag): deletes.TagPlan}: how each planned delete would go, in order."""
    by_repository = {}
    for target in plan.targets():
        by_repository.setdefault(target.repository, []).append(target.tag)
    plans = {}
    for repository, tags in by_repository.items():
        for tag_plan in deletes.plan_tags(live.get(repository), tags):
            plans[repository, tag_plan.tag] = tag_plan
    return plans


def dry_run_summary(plan, live=None):
    how = tag_plans(plan, live) if live is not None else {}
    tags = []
    for t in plan.targets()[:SUMMARY_TAG_LIMIT]:
        tag_plan = how.get((t.repository, t.tag))
        tags.append(
            {
                "repository": t.repository,
                "tag": t.tag,
                "state": "would delete",
                "message": t.reason
                + (f" — {tag_plan.method_text}" if tag_plan and tag_plan.method else "")
                + (f", {tag_plan.referrers_text}" if tag_plan and tag_plan.referrers else ""),
                "method": tag_plan.method if tag_plan else "",
                "reclaimable_bytes": tag_plan.reclaimable_bytes if tag_plan else 0,
            }
        )
    return {
        "dry_run": True,
        "rules": [r.rule.name for r in plan.rules],
        "planned": plan.delete_count,
        "kept": plan.keep_count,
        "reclaimable_bytes": sum(p.reclaimable_bytes for p in how.values()),
        "tags": tags,
        "truncated": plan.delete_count > SUMMARY_TAG_LIMIT,
    }


def retention_job(run):
    """Worker job "retention": options {"dry_run": bool}; a run with nothing deleted but
    failures raises, so the Run shows as failed with the registry's reason."""

    live = deletes.LiveRepositories()
    plan = build_plan(live=live)
    if (run.options or {}).get("dry_run"):
        worker.report_progress(run, done=0, total=0, message=f"{plan.delete_count} to delete")
        return dry_run_summary(plan, live)
    total = plan.delete_count
    worker.report_progress(run, done=0, total=total, message=f"{total} tags to delete")

    def progress(done, outcome):
        worker.report_progress(run, done=done, message=f"{outcome.repository}:{outcome.tag}")

    actor = f"retention ({run.requested_by or 'schedule'})"
    summary = apply_plan(plan, actor, on_progress=progress, live=live)
    if summary["failed"] and not summary["deleted"]:
        first = next(t for t in summary["tags"] if t["state"] == deletes.FAILED)
        raise RuntimeError(f"No tag deleted; {summary['failed']} failed: {first['message']}")
    return summary
