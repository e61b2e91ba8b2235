"""Jobs health: flag a job whose last success is older than twice its interval."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.urls import reverse
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from jobs import services
from jobs.health import job_health
from jobs.models import JobRun
from jobs.registry import JOBS, get

pytestmark = pytest.mark.django_db
T = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def health(name, now):
    return next(row for row in job_health(now=now) if row.job.name == name)


def succeeded(name, at):
    return JobRun.objects.create(job_name=name, status="succeeded", started_at=at, finished_at=at)


def test_a_job_is_overdue_once_its_last_success_is_older_than_twice_its_interval():
    PeriodicTask.objects.filter(name=get("expire_grants").title).update(
        date_changed=T - timedelta(days=1)
    )
    succeeded("expire_grants", T)  # every 5 minutes
    JobRun.objects.create(
        job_name="expire_grants", status="skipped", started_at=T + timedelta(minutes=5)
    )
    assert health("expire_grants", T + timedelta(minutes=10)).state == "ok"
    late = health("expire_grants", T + timedelta(minutes=10, seconds=1))
    assert late.state == "overdue" and not late.ok
    assert late.note == "Last success 10 min ago, more than twice its interval (0:05:00)."
    assert late.last_run.status == "skipped" and late.last_success_at == T


def test_the_interval_staff_set_counts_and_a_crontab_falls_back_to_the_default():
    task = PeriodicTask.objects.get(name=get("expire_grants").title)
    task.interval = IntervalSchedule.objects.create(every=1, period="hours")
    task.save()
    succeeded("expire_grants", T)
    assert health("expire_grants", T + timedelta(hours=2)).state == "ok"
    task.interval, task.crontab = None, CrontabSchedule.objects.create(minute="0", hour="3")
    task.save()
    row = health("expire_grants", T + timedelta(hours=2))
    assert row.state == "overdue" and "checked against the default 0:05:00" in row.schedule


def test_disabled_missing_never_run_and_failed_jobs():
    PeriodicTask.objects.filter(name=get("send_notifications").title).update(enabled=False)
    PeriodicTask.objects.filter(name=get("prune_job_runs").title).delete()
    recent = PeriodicTask.objects.get(name=get("issue_recurring_grants").title).date_changed
    assert health("send_notifications", T).state == "disabled"
    assert health("prune_job_runs", T).state == "not scheduled"
    assert health("issue_recurring_grants", recent + timedelta(minutes=1)).state == "waiting"
    never = health("issue_recurring_grants", recent + timedelta(hours=3))
    assert never.state == "overdue" and never.note.startswith("Never succeeded")

    succeeded("stripe_sweep", T)
    JobRun.objects.create(
        job_name="stripe_sweep", status="failed", started_at=T + timedelta(seconds=30)
    )
    row = health("stripe_sweep", T + timedelta(minutes=1))
    assert row.state == "ok" and row.note == "The last run failed; see its error."


def test_the_health_command_fails_when_a_job_needs_attention(capsys):
    # Every registered job succeeded just now (a list written out here went stale
    # whenever a job was added, and the test then failed once the suite ran longer
    # than twice the new job's interval).
    now = datetime.now(UTC)
    for job in JOBS:
        succeeded(job.name, now)
    call_command("jobs_health")
    assert "ok            expire_grants" in capsys.readouterr().out
    with time_machine.travel(now + timedelta(minutes=11), tick=False):
        with pytest.raises(CommandError, match="need attention: .*expire_grants"):
            call_command("jobs_health")


def test_the_health_page_and_the_job_runs_list(admin_client, django_capture_on_commit_callbacks):
    succeeded("expire_grants", datetime.now(UTC))
    JobRun.objects.create(
        job_name="send_notifications",
        status="failed",
        error_summary="SMTPServerDisconnected: bye\nmore",
    )
    page = admin_client.get(reverse("admin:jobs_jobhealth_changelist"))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-job="expire_grants" data-state="ok"' in html
    assert "Expire due credit grants (breakage)" in html and "every 5 minutes" in html
    assert "Run now" in html

    runs = admin_client.get(reverse("admin:jobs_jobrun_changelist"))
    assert runs.status_code == 200 and "SMTPServerDisconnected: bye" in runs.content.decode()
    assert "Jobs health" in runs.content.decode()
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert "Jobs health" in index and "Job runs" in index

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(
            reverse("admin:jobs_jobhealth_changelist"), {"job": "expire_grants"}
        )
    assert response.status_code == 302 and len(callbacks) == 1  # sent to the broker on commit


def test_staff_without_permission_cannot_see_or_run_jobs(client, django_user_model):
    clerk = django_user_model.objects.create_user("clerk", password="pw-12345678", is_staff=True)
    client.force_login(clerk)
    assert client.get(reverse("admin:jobs_jobhealth_changelist")).status_code == 403
    assert (
        client.post(
            reverse("admin:jobs_jobhealth_changelist"), {"job": "expire_grants"}
        ).status_code
        == 403
    )


def test_pruning_keeps_recent_runs_and_each_jobs_last_success():
    old = T - timedelta(days=40)
    last_success = succeeded("expire_grants", old)
    older = [succeeded("expire_grants", old - timedelta(days=1)) for _ in range(3)]
    skipped = JobRun.objects.create(job_name="expire_grants", status="skipped", started_at=old)
    recent = JobRun.objects.create(job_name="expire_grants", status="skipped", started_at=T)
    batches = list(services.prune_job_runs(batch_size=2, now=T))
    assert [b.processed for b in batches] == [2, 2]
    assert set(JobRun.objects.values_list("pk", flat=True)) == {last_success.pk, recent.pk}
    assert not JobRun.objects.filter(pk__in=[r.pk for r in older] + [skipped.pk]).exists()
