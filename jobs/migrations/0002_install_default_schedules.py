"""Install the default beat schedule of every job in jobs.registry.

Idempotent (jobs.schedules.install): a job's PeriodicTask is created once, by its
title; later runs (post_migrate after every `migrate`, `manage.py
install_schedules`) leave the schedule staff set alone. The Stripe sweep that
billing 0004 installed is the registry's "stripe_sweep" entry, under the same name.
"""

from django.db import migrations


def install(apps, schema_editor):
    from jobs import schedules

    schedules.install(
        PeriodicTask=apps.get_model("django_celery_beat", "PeriodicTask"),
        IntervalSchedule=apps.get_model("django_celery_beat", "IntervalSchedule"),
        PeriodicTasks=apps.get_model("django_celery_beat", "PeriodicTasks"),
        using=schema_editor.connection.alias,
    )


def remove(apps, schema_editor):
    # The Stripe sweep belongs to billing 0004; leave it to that migration's reverse.
    from jobs.registry import JOBS

    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.using(schema_editor.connection.alias).filter(
        name__in=[job.title for job in JOBS if job.name != "stripe_sweep"]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
        ("billing", "0004_stripe_sweep_schedule"),
    ]

    operations = [migrations.RunPython(install, remove)]
