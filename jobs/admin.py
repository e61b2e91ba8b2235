"""Job runs (read-only) and the "Jobs health" page, with a "Run now" button."""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from jobs import registry
from jobs.health import job_health
from jobs.models import JobHealth, JobRun

STATUS_COLOURS = {
    "running": "#175cd3",
    "succeeded": "#067647",
    "failed": "#b42318",
    "skipped": "#5b6478",
    "interrupted": "#b54708",
    "ok": "#067647",
    "waiting": "#5b6478",
    "disabled": "#5b6478",
    "overdue": "#b42318",
    "not scheduled": "#b54708",
}


def badge(text: str, key: str) -> str:
    return format_html(
        '<span style="color:#fff;background:{};padding:2px 8px;border-radius:10px;font-size:11px">{}</span>',
        STATUS_COLOURS.get(key, "#5b6478"),
        text,
    )


@admin.register(JobRun)
class JobRunAdmin(admin.ModelAdmin):
    list_display = [
        "job_name",
        "status_badge",
        "started_at",
        "finished_at",
        "duration",
        "batches",
        "items_processed",
        "items_failed",
        "short_error",
    ]
    list_filter = ["status", "job_name"]
    search_fields = ["job_name", "error_summary", "task_id"]
    date_hierarchy = "started_at"
    readonly_fields = (
        "job_name",
        "status",
        "started_at",
        "finished_at",
        "duration",
        "batches",
        "items_processed",
        "items_failed",
        "error_summary",
        "task_id",
        "worker",
    )
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: JobRun) -> str:
        return badge(obj.get_status_display(), obj.status)

    @admin.display(description="error")
    def short_error(self, obj: JobRun) -> str:
        first = obj.error_summary.splitlines()[0] if obj.error_summary else ""
        return first[:120] or "—"

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "health_url": reverse("admin:jobs_jobhealth_changelist"),
        }
        return super().changelist_view(request, extra_context)


@admin.register(JobHealth)
class JobHealthAdmin(admin.ModelAdmin):
    """One line per registered job: its schedule, last run, last success, and a flag
    when the last success is older than twice the interval."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("jobs.view_jobrun")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobs.view_jobrun")

    def can_run(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_celery_beat.change_periodictask")

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            return self._run_now(request)
        rows = job_health()
        context = {
            **self.admin_site.each_context(request),
            "title": "Jobs health",
            "opts": self.model._meta,
            "rows": [
                {
                    "health": row,
                    "state": badge(row.state, row.state),
                    "last_status": badge(row.last_run.get_status_display(), row.last_run.status)
                    if row.last_run
                    else "—",
                    "task_url": reverse(
                        "admin:django_celery_beat_periodictask_change", args=[row.periodic_task.pk]
                    )
                    if row.periodic_task
                    else "",
                    "run_url": reverse("admin:jobs_jobrun_change", args=[row.last_run.pk])
                    if row.last_run
                    else "",
                    "runs_url": reverse("admin:jobs_jobrun_changelist")
                    + f"?job_name={row.job.name}",
                }
                for row in rows
            ],
            "problems": sum(not row.ok for row in rows),
            "can_run": self.can_run(request),
        }
        return TemplateResponse(request, "admin/jobs/health.html", context)

    def _run_now(self, request: HttpRequest) -> HttpResponse:
        if not self.can_run(request):
            raise PermissionDenied
        name = request.POST.get("job", "")
        try:
            job = registry.get(name)
        except KeyError:
            self.message_user(request, f"Unknown job {name!r}.", messages.ERROR)
        else:
            # Sent after commit (the admin request runs in autocommit, so at once);
            # the runner's lock makes it a recorded skip if the job is running.
            transaction.on_commit(lambda: current_app.send_task(job.task))
            self.message_user(
                request,
                f"{job.title}: queued. Its run appears under Job runs when a worker picks it up.",
                messages.SUCCESS,
            )
        return HttpResponseRedirect(reverse("admin:jobs_jobhealth_changelist"))
