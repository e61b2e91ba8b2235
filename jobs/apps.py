from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate

logger = logging.getLogger(__name__)


def install_missing_schedules(sender: AppConfig, *, using: str, **kwargs: Any) -> None:
    """After every migrate (and test-database flush): install the default schedule of
    any job added to the registry since. Staff changes to existing ones are kept."""
    from django.apps import apps as global_apps

    from jobs import schedules

    apps = kwargs.get("apps") or global_apps  # flush sends no `apps`

    try:
        periodic_task = apps.get_model("django_celery_beat", "PeriodicTask")
        interval_schedule = apps.get_model("django_celery_beat", "IntervalSchedule")
        periodic_tasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    except LookupError:  # migrated to a state before django-celery-beat
        return
    changes = schedules.install(
        PeriodicTask=periodic_task,
        IntervalSchedule=interval_schedule,
        PeriodicTasks=periodic_tasks,
        using=using,
    )
    for change in changes:
        logger.info("beat schedule: %s", change)


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Scheduled jobs"

    def ready(self) -> None:
        post_migrate.connect(install_missing_schedules, sender=self)
