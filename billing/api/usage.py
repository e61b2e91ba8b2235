"""Usage endpoints: record one event or a batch, reverse an event."""

# No `from __future__ import annotations`: django-ninja reads these annotations at runtime.
import json
from typing import Any

import pydantic
from django.conf import settings
from django.http import HttpRequest
from ninja import Status

from billing.api.auth import api_key_of, router
from billing.api.responses import (
    BATCH_RESPONSES,
    REVERSE_RESPONSES,
    USAGE_RESPONSES,
    documented,
    error_response,
    failed,
    field_errors,
    json_response,
    pydantic_errors,
    revoked,
    usage_out,
)
from billing.api.schemas import EventPkPath, UsageBatchIn, UsageEventIn
from billing.errors import ApiKeyNotUsable, FieldProblem, UsageError, UsageRejected
from billing.models import (
    UsageEvent,
)
from billing.usage.recording import (
    UsageInput,
    UsageOutcome,
    record_usage,
    record_usage_batch,
    reverse_usage,
)
from wallets.actors import Actor


@router.post(
    "/usage",
    operation_id="billing_api_post_usage",
    response=USAGE_RESPONSES,
    openapi_extra=documented(USAGE_RESPONSES),
    tags=["usage"],
    summary="Send one usage event",
)
def post_usage(request: HttpRequest, event: UsageEventIn) -> Any:
    """Rate the event and draw it down from the customer's wallet now. The answer
    says what it cost, which grants paid, and the available funds after it.
    Sending the same `event_id` for the same customer again books nothing and
    returns the first answer (`replayed: true`)."""
    key = api_key_of(request, checked_by_view=True)  # LOOKUP_SQL checks it
    try:
        outcome = record_usage(event=event.to_input(), actor=Actor.api_key(key), api_key=key)
    except ApiKeyNotUsable:
        return revoked(request)
    except UsageError as exc:
        return error_response(exc, prefix=("body", "event"))
    return json_response(200, usage_out(outcome))


@router.post(
    "/usage/batch",
    operation_id="billing_api_post_usage_batch",
    response=BATCH_RESPONSES,
    openapi_extra=documented(BATCH_RESPONSES),
    tags=["usage"],
    summary="Send up to 1,000 usage events",
)
def post_usage_batch(request: HttpRequest, batch: UsageBatchIn) -> Any:
    """Each event is validated, rated and drawn down on its own: valid events are
    booked, invalid or refused ones are reported in their own result (with the
    status they would have had alone: 402, 409, 422). The response is 200 with
    one result per event, in order; only a batch that is itself invalid (empty,
    too big) answers 422 and books nothing."""
    limit = settings.USAGE_BATCH_MAX_EVENTS
    if not batch.events or len(batch.events) > limit:
        api_key_of(request)
        message = (
            "send at least one event."
            if not batch.events
            else f"a batch holds at most {limit} events, got {len(batch.events)}; "
            "split it into smaller batches."
        )
        return Status(422, {"detail": field_errors([FieldProblem("events", message)],
                                                    prefix=("body", "batch"))})  # fmt: skip
    results: list[dict[str, Any] | None] = [None] * len(batch.events)
    inputs: list[tuple[int, UsageInput]] = []
    for index, raw in enumerate(batch.events):
        if not isinstance(raw, dict):
            results[index] = failed(
                index, None, 422, [{"loc": [], "type": "object_type",
                                    "msg": "each event must be a JSON object (see UsageEventIn)."}]
            )  # fmt: skip
            continue
        try:
            parsed = UsageEventIn.model_validate(raw)
        except pydantic.ValidationError as exc:
            event_id = raw.get("event_id")
            results[index] = failed(
                index, event_id if isinstance(event_id, str) else None, 422, pydantic_errors(exc)
            )
            continue
        inputs.append((index, parsed.to_input()))
    # With events to book, the lookup statement checks the key; without, check it here.
    key = api_key_of(request, checked_by_view=bool(inputs))
    try:
        outcomes = (
            record_usage_batch(
                events=[event for _, event in inputs], actor=Actor.api_key(key), api_key=key
            )
            if inputs
            else []
        )
    except ApiKeyNotUsable:
        return revoked(request)
    for (index, event), outcome in zip(inputs, outcomes, strict=True):
        if isinstance(outcome, UsageOutcome):
            results[index] = {
                "index": index,
                "event_id": event.event_id,
                "ok": True,
                "status": 200,
                "usage": usage_out(outcome),
                "errors": [],
            }
        else:
            errors = (
                field_errors(outcome.problems)
                if isinstance(outcome, UsageRejected)
                else [{"loc": [], "msg": str(outcome), "type": type(outcome).__name__}]
            )
            results[index] = failed(index, event.event_id, outcome.status_code, errors)
    done = [r for r in results if r is not None]
    replayed = sum(1 for r in done if r["ok"] and r["usage"]["replayed"])
    booked = sum(1 for r in done if r["ok"]) - replayed
    return json_response(
        200,
        {
            "booked": booked,
            "replayed": replayed,
            "failed": sum(1 for r in done if not r["ok"]),
            "results": done,
        },
    )


@router.post(
    "/usage/{event_pk}/reverse",
    operation_id="billing_api_post_usage_reverse",
    response=REVERSE_RESPONSES,
    openapi_extra=documented(REVERSE_RESPONSES),
    tags=["usage"],
    summary="Reverse a booked usage event",
)
def post_usage_reverse(request: HttpRequest, event_pk: EventPkPath) -> Any:
    """Undo the event's draw-down: its credit goes back to the grants it came from
    (with their original expiry) and any debt it created is cancelled. `event_pk`
    is the `id` from the usage answer. Reversing twice returns the first answer.
    The whole event is reversed: the request takes no body, and one is refused
    (422) rather than ignored (a `quantity` sent for a partial reversal would
    otherwise reverse everything)."""
    key = api_key_of(request)
    if sends_fields(request):
        return Status(422, {"detail": [{"loc": ["body"], "type": "extra_forbidden",
                                        "msg": "send no body: the whole event is reversed."}]})  # fmt: skip
    event = UsageEvent.objects.select_related("customer").filter(pk=event_pk).first()
    if event is None or not key.may_see(event.customer):
        return Status(404, {"detail": f"no usage event with id {event_pk}."})
    try:
        outcome = reverse_usage(event=event, actor=Actor.api_key(key))
    except UsageError as exc:
        return Status(exc.status_code, {"detail": str(exc)})
    return Status(200, {**outcome.response, "replayed": outcome.replayed})


def sends_fields(request: HttpRequest) -> bool:
    """Whether the request carries any input in its body: an empty body, an empty
    JSON object and an empty form carry none."""
    body = request.body.strip()
    if not body:
        return False
    if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return bool(request.POST or request.FILES)
    try:
        return json.loads(body) != {}
    except (ValueError, RecursionError):
        return True
