"""Default beat schedules: one registry, installed idempotently, owned by staff after."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

from config.celery import app
from jobs import schedules
from jobs.registry import JOBS, Job, get

pytestmark = pytest.mark.django_db


def test_every_registered_job_is_installed_with_its_default_interval():
    for job in JOBS:
        task = PeriodicTask.objects.get(name=job.title)
        every, period = schedules.interval_of(job.every)
        assert (task.task, task.enabled, task.description) == (job.task, True, job.description)
        assert (task.interval.every, task.interval.period) == (every, period)
    assert PeriodicTask.objects.filter(task="billing.tasks.sweep_stripe").count() == 1


def test_the_registry_names_real_tasks_once_each():
    app.loader.import_default_modules()
    assert len({j.name for j in JOBS}) == len({j.title for j in JOBS}) == len(JOBS)
    for job in JOBS:
        assert job.task in app.tasks, f"{job.task} is not a registered Celery task"
        assert job.batch_size > 0 and job.time_budget < timedelta(hours=1)


def test_installing_again_changes_nothing():
    assert schedules.install() == []
    out = StringIO()
    call_command("install_schedules", stdout=out)
    assert out.getvalue().strip() == "0 change(s)."


def test_staff_changes_are_kept_until_a_reset():
    task = PeriodicTask.objects.get(name=get("expire_grants").title)
    nightly = CrontabSchedule.objects.create(minute="5", hour="2")
    task.interval, task.crontab, task.enabled = None, nightly, False
    task.save()
    assert schedules.install() == []
    task.refresh_from_db()
    assert task.crontab == nightly and not task.enabled

    before = PeriodicTasks.last_change()
    changes = schedules.install(reset=True)
    assert changes == ["updated 'Expire due credit grants (breakage)': crontab, enabled, interval"]
    task.refresh_from_db()
    assert task.crontab is None and task.enabled and task.interval.every == 5
    assert PeriodicTasks.last_change() > before  # running beats reload
    assert schedules.install(reset=True) == []


def test_a_job_added_to_the_registry_later_is_installed_without_a_migration():
    new = Job(
        name="revert_temporary_limits", task="wallets.tasks.revert_temporary_limits",
        every=timedelta(minutes=15), title="Revert temporary credit limits", description="…",
    )  # fmt: skip
    assert schedules.install(jobs=[*JOBS, new]) == [
        "installed 'Revert temporary credit limits' (wallets.tasks.revert_temporary_limits) "
        "every 0:15:00"
    ]
    assert PeriodicTask.objects.get(name=new.title).interval.period == "minutes"


def test_code_owned_fields_follow_the_registry():
    task = PeriodicTask.objects.get(name=get("send_notifications").title)
    task.task, task.description = "wallets.tasks.old_name", "old"
    task.save()
    assert schedules.install() == [
        "updated 'Send queued notifications': description, task",
    ]


@pytest.mark.parametrize(
    "every, expected",
    [
        (timedelta(minutes=5), (5, "minutes")),
        (timedelta(hours=1), (1, "hours")),
        (timedelta(seconds=90), (90, "seconds")),
        (timedelta(days=1), (1, "days")),
    ],
)
def test_intervals(every, expected):
    assert schedules.interval_of(every) == expected
    assert schedules.seconds_of(*expected) == every.total_seconds()
