"""`python manage.py retention [--dry-run]`: apply the retention rules now.

--dry-run prints, rule by rule and repository by repository, every tag the rules would delete
and every tag they keep, with the reason; nothing changes. Without it the tags are deleted (one
tag at a time, sibling tags kept) and the results printed and recorded in the audit log. Exit
status 1 when a tag could not be deleted or another retention run holds the lock.
"""

from django.core.management.base import CommandError

from ... import deletes, registry, retention, worker
from ...models import JobKind
from ...registry_users import cli_actor
from ..base import PortalCommand


class Command(PortalCommand):
    help = "Apply the enabled retention rules to the registry's tags (--dry-run: only list)."

    failures = (worker.JobBusy,)
    dry_run_help = "List what would be deleted and kept; change nothing."

    def run(self, *, dry_run, **options):
        if dry_run:
            live = deletes.LiveRepositories()
            try:
                plan = retention.build_plan(live=live)
                how = retention.tag_plans(plan, live)
            except registry.RegistryError as exc:
                raise CommandError(f"Could not read the registry: {exc}") from exc
            self.print_plan(plan, how)
            return
        run = worker.run_now(JobKind.RETENTION, user=cli_actor())
        if run.state != run.State.DONE:
            raise CommandError(f"Retention run #{run.pk} failed: {run.error}")
        self.print_results(run.result)
        if run.result.get("failed"):
            raise CommandError(f"{run.result['failed']} tag(s) could not be deleted (see above).")

    def print_plan(self, plan, how):
        out = self.stdout.write
        if not plan.rules:
            out("No enabled retention rules.")
            return
        for rule_plan in plan.rules:
            rule = rule_plan.rule
            out(f"Rule “{rule.name}” (position {rule.position}) — {retention.describe_rule(rule)}")
            if not rule_plan.repositories and not rule_plan.shadowed:
                out("  matches no repository in the index")
            for repo in rule_plan.repositories:
                out(f"  {repo.repository}: delete {len(repo.to_delete)}, keep {len(repo.to_keep)}")
                for d in repo.decisions:
                    age = d.age_at.strftime("%Y-%m-%d %H:%M") if d.age_at else "unknown"
                    line = f"    {d.action:<6} {d.tag:<30} {age} ({d.age_source}): {d.reason}"
                    tag_plan = how.get((repo.repository, d.tag)) if d.deletes else None
                    if tag_plan and tag_plan.method:
                        line += f" — {tag_plan.method_text}"
                        if tag_plan.referrers:
                            line += f", {tag_plan.referrers_text}"
                        if tag_plan.method == deletes.BY_DIGEST:
                            line += f", ≈ {tag_plan.reclaimable_bytes:,} bytes reclaimable"
                    out(line)
            for name, governing in rule_plan.shadowed:
                out(f"  {name}: governed by the earlier rule “{governing}”")
        reclaimable = sum(p.reclaimable_bytes for p in how.values())
        out(
            f"Dry run: {plan.delete_count} tag(s) would be deleted and {plan.keep_count} kept "
            f"(as of {plan.now:%Y-%m-%d %H:%M} UTC, tags read from the registry); ≈ "
            f"{reclaimable:,} bytes would become reclaimable. Nothing was changed."
        )

    def print_results(self, result):
        for item in result.get("tags", []):
            self.stdout.write(
                f"{item['state']:<14} {item['repository']}:{item['tag']}  {item['message']}"
            )
        if result.get("truncated"):
            self.stdout.write(f"(only the first {retention.SUMMARY_TAG_LIMIT} tags are listed)")
        self.stdout.write(
            f"Deleted {result.get('deleted', 0)}, already gone {result.get('already_gone', 0)}, "
            f"failed {result.get('failed', 0)}, not attempted {result.get('not_attempted', 0)}; "
            f"kept {result.get('kept', 0)}."
        )
        if result.get("deleted"):
            self.stdout.write(deletes.GC_ADVICE)
