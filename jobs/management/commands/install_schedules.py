"""Install the default beat schedule of every job in jobs.registry (idempotent)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from jobs import schedules


class Command(BaseCommand):
    help = (
        "Install the registry's default schedules as django-celery-beat periodic tasks. "
        "Existing ones keep the schedule staff gave them unless --reset is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset",
            action="store_true",
            help="also restore each job's default interval and enable it",
        )

    def handle(self, *args: Any, reset: bool = False, **options: Any) -> None:
        changes = schedules.install(reset=reset)
        for change in changes:
            self.stdout.write(change)
        self.stdout.write(f"{len(changes)} change(s).")
