"""Lockout after failed sign-ins, on every page that signs in with a password
(the portal's and the admin's). django-axes counts the failures and refuses a
locked sign-in; this module tells the person until when, reads the client
address, and answers how long a lock still lasts for the admin.

Axes counts, for each lockout parameter (the account, the client address), the
failures of its attempt rows whose last failure lies within the cool-off; a row
drops out one cool-off after its last failure, and the sign-in is locked while
any parameter's count reaches the limit (`AxesDatabaseHandler.get_failures`).
`lock_end` answers when that stops being true, from the same rows."""

import ipaddress
import logging
import math
from collections.abc import Iterable
from datetime import datetime, timedelta

from axes.handlers.database import AxesDatabaseHandler
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_parameters, get_cool_off, get_failure_limit
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import QuerySet
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.timesince import timeuntil

log = logging.getLogger(__name__)


def lock_end(
    attempt_sets: Iterable[QuerySet[AccessAttempt]], *, limit: int, cool_off: timedelta
) -> datetime | None:
    """When the lock these attempt rows hold ends, or None if they hold none.

    Per parameter, newest rows first: the row whose failures bring the count to the
    limit is the one whose dropping out ends the lock, one cool-off after its time."""
    end = None
    for attempts in attempt_sets:
        failures = 0
        rows = attempts.order_by("-attempt_time").values_list(
            "attempt_time", "failures_since_start"
        )
        for attempt_time, count in rows:
            failures += count
            if failures >= limit:
                candidate = attempt_time + cool_off
                end = candidate if end is None else max(end, candidate)
                break
    return end


def request_lock_end(request: HttpRequest, credentials: dict | None) -> datetime | None:
    """When the lock on this sign-in (its account, its address) ends."""
    AxesProxyHandler.update_request(request)  # the address, the time (once per request)
    attempt_sets = AxesDatabaseHandler().get_user_attempts(request, credentials)
    cool_off = get_cool_off(request)
    assert cool_off is not None  # settings.AXES_COOLOFF_TIME is always set
    return lock_end(attempt_sets, limit=get_failure_limit(request, credentials), cool_off=cool_off)


def attempt_lock_ends(attempt: AccessAttempt, *, now: datetime) -> dict[str, datetime]:
    """For the admin: which of an attempt row's parameters ("username",
    "ip_address") are locked now, and until when."""
    cool_off = get_cool_off()
    assert cool_off is not None
    limit = get_failure_limit(None, None)
    ends = {}
    parameters = get_client_parameters(
        attempt.username, attempt.ip_address, attempt.user_agent, attempt
    )
    for parameter in parameters:
        attempts = AccessAttempt.objects.filter(**parameter, attempt_time__gte=now - cool_off)
        end = lock_end([attempts], limit=limit, cool_off=cool_off)
        if end is not None and end >= now:
            ends[" and ".join(parameter)] = end
    return ends


def shown_time(moment: datetime) -> datetime:
    """`moment` rounded up to the whole minute: 'after 10:16' is true for a lock
    that ends at 10:15:20."""
    if moment.second or moment.microsecond:
        moment = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return moment


def format_until(end: datetime, *, now: datetime) -> str:
    """'10:15 UTC (in 15 minutes)', with the date when it is not today."""
    local = timezone.localtime(end)
    text = f"{local:%H:%M} {local.tzname()}"
    if local.date() != timezone.localtime(now).date():
        text += f" on {local.day} {local:%B %Y}"
    return f"{text} (in {timeuntil(end, now)})".replace("\xa0", " ")


def lockout_message(end: datetime | None, *, now: datetime) -> str:
    if end is None:
        return "Too many failed sign-in attempts. Signing in is paused; try again later."
    return (
        "Too many failed sign-in attempts for this account or from your address. Signing "
        f"in is paused: try again after {format_until(shown_time(end), now=now)}."
    )


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict | None
) -> HttpResponse:
    """`AXES_LOCKOUT_CALLABLE`: the sign-in page that was answered, in its own site's
    style (portal or admin), with the form's error replaced by when to try again;
    429 with Retry-After."""
    now = getattr(request, "axes_attempt_time", None) or timezone.now()
    end = request_lock_end(request, credentials)
    message = lockout_message(end, now=now)
    context = getattr(original_response, "context_data", None) or {}
    form = context.get("form")
    if isinstance(original_response, TemplateResponse) and isinstance(form, Form):
        form.errors.clear()
        form.add_error(None, message)
        response: HttpResponse = TemplateResponse(
            request,
            original_response.template_name,  # type: ignore[arg-type]
            context,
            status=settings.AXES_HTTP_RESPONSE_CODE,
        ).render()  # the middleware that calls this runs after responses are rendered
    else:  # a sign-in outside the two login pages: no page to show the message on
        response = HttpResponse(
            message,
            status=settings.AXES_HTTP_RESPONSE_CODE,
            content_type="text/plain; charset=utf-8",
        )
    if end is not None:
        response["Retry-After"] = str(max(1, math.ceil((shown_time(end) - now).total_seconds())))
    return response


def attempted_username(request: HttpRequest, credentials: dict | None) -> str | None:
    """`AXES_USERNAME_CALLABLE`: the username tried, cut to the 255 characters axes'
    column holds. Django's sign-in form does not enforce the username's length, and
    a longer one would fail the row's insert (a 500 instead of "wrong password")."""
    field = getattr(settings, "AXES_USERNAME_FORM_FIELD", "username")  # set by axes.conf
    username = credentials.get(field) if credentials else request.POST.get(field)
    return username[:255] if isinstance(username, str) else username


def client_ip(request: HttpRequest) -> str | None:
    """`AXES_CLIENT_IP_CALLABLE`: the address a lockout counts against.

    REMOTE_ADDR, unless `TRUSTED_PROXY_COUNT` proxies stand in front of the app,
    each appending the address it saw to X-Forwarded-For: then the entry that many
    places from the right (what the first trusted proxy saw). Entries further left
    are written by the client and never read. A header that the proxies cannot
    have written (too short, not an address) falls back to REMOTE_ADDR."""
    remote = _address(request.META.get("REMOTE_ADDR", ""))
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies <= 0:
        if "HTTP_X_FORWARDED_FOR" in request.META:
            log.info(
                "Sign-in with X-Forwarded-For ignored (TRUSTED_PROXY_COUNT=0): counting it "
                "against %s. Behind a proxy, set TRUSTED_PROXY_COUNT, or every client "
                "shares the proxy's address and its lockouts.",
                remote,
            )
        return remote
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    hops = [hop for hop in hops if hop]
    if len(hops) >= proxies:
        forwarded = _address(hops[-proxies])
        if forwarded is not None:
            return forwarded
    log.warning(
        "Sign-in from %s without the X-Forwarded-For that %d trusted proxies write (%r); "
        "counting it against %s",
        remote,
        proxies,
        request.META.get("HTTP_X_FORWARDED_FOR", "")[:200],
        remote,
    )
    return remote


def _address(text: str) -> str | None:
    """An IP address from `text` ('203.0.113.7', '203.0.113.7:5123', '[2001:db8::1]:443'),
    normalised, or None."""
    candidates = [text]
    if text.startswith("[") and "]" in text:
        candidates.append(text[1 : text.index("]")])
    elif text.count(":") == 1:
        candidates.append(text.partition(":")[0])
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None
