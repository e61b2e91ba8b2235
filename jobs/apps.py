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
        models = {
            name: apps.get_model("django_celery_beat", name)
            for name in ("PeriodicTask", "IntervalSchedule", "PeriodicTasks")
        }
    except LookupError:  # migrated to a state before django-celery-beat
        return
    for change in schedules.install(**models, using=using):
        logger.info("beat schedule: %s", change)


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Scheduled jobs"

    def ready(self) -> None:
        post_migrate.connect(install_missing_schedules, sender=self)
