import os

from celery import Celery
from celery.signals import task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("prepaid")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
def close_stale_connections(**kwargs: object) -> None:
    """A worker's connection whose PostgreSQL restarted would fail the next task."""
    from config.outage import close_stale_connections

    close_stale_connections()
