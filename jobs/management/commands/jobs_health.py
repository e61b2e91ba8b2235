"""Print the jobs health table; exit 1 when a job is overdue (for monitoring)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from jobs.health import job_health


class Command(BaseCommand):
    help = "Show each scheduled job's last success; fail when one is older than twice its interval."

    def handle(self, *args: Any, **options: Any) -> None:
        rows = job_health()
        for row in rows:
            last = (
                row.last_success_at.isoformat(timespec="seconds")
                if row.last_success_at
                else "never"
            )
            self.stdout.write(
                f"{row.state:<13} {row.job.name:<24} {row.schedule:<28} last success {last}"
                + (f"  — {row.note}" if row.note else "")
            )
        bad = [row.job.name for row in rows if not row.ok]
        if bad:
            raise CommandError(f"{len(bad)} job(s) need attention: {', '.join(bad)}")
