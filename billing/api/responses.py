"""How the API answers errors, and what each endpoint may answer (for the
OpenAPI document)."""

# No `from __future__ import annotations`: django-ninja reads these annotations at runtime.
import json
from datetime import datetime
from typing import Any

import pydantic
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse
from ninja import Status
from ninja.errors import AuthenticationError

from billing.api.auth import api_key_of
from billing.api.schemas import (
    BalanceOut,
    ErrorOut,
    GrantOut,
    ReversalOut,
    TransactionOut,
    UsageBatchOut,
    UsageOut,
    ValidationErrorOut,
)
from billing.errors import FieldProblem, UsageError, UsageRejected
from billing.usage.recording import (
    UsageOutcome,
)


def field_errors(problems: list[FieldProblem], *, prefix: tuple[str | int, ...] = ()) -> list:
    return [{"loc": [*prefix, p.field], "msg": p.message, "type": "value_error"} for p in problems]


def pydantic_errors(exc: pydantic.ValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def error_response(exc: UsageError, *, prefix: tuple[str | int, ...]) -> Status:
    if isinstance(exc, UsageRejected):
        return Status(exc.status_code, {"detail": field_errors(exc.problems, prefix=prefix)})
    return Status(exc.status_code, {"detail": str(exc)})


def failed(index: int, event_id: str | None, status: int, errors: list) -> dict[str, Any]:
    """A batch result for an event that was not booked."""
    return {"index": index, "event_id": event_id, "ok": False, "status": status, "usage": None,
            "errors": errors}  # fmt: skip


def usage_out(outcome: UsageOutcome) -> dict[str, Any]:
    """The answer for a usage event as `UsageOut` renders it (its stored answer is
    JSON-ready already; only the timestamp is written as ninja writes datetimes)."""
    answer = {**outcome.response, "replayed": outcome.replayed}
    answer["timestamp"] = JSON.default(datetime.fromisoformat(answer["timestamp"]))
    return answer


# Usage answers are built JSON-ready (decimals as text, from the stored answer), so
# the usage views return them as they are: ninja re-validating the answer against
# its schema (kept for the docs; a test checks that the answers are what it would
# render) took about as long as booking a batch.
JSON = DjangoJSONEncoder()


def json_response(status: int, body: Any) -> HttpResponse:
    return HttpResponse(json.dumps(body), status=status, content_type="application/json")


def revoked(request: HttpRequest) -> HttpResponse:
    """The usage lookup found this process's remembered key revoked: answer as
    authentication does (401 with the reason, and the key forgotten)."""
    key = api_key_of(request, checked_by_view=True)
    key.checked = False
    try:
        api_key_of(request)
    except AuthenticationError as exc:
        response = json_response(exc.status_code, {"detail": exc.message})
        response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response
    raise AssertionError("the key is usable after all")  # pragma: no cover


# --- what each endpoint may answer --------------------------------------------------

# Every endpoint behind an API key; with a body; the usage answers. Descriptions go
# into the OpenAPI document (ninja writes only the status's name).
COMMON_ERRORS: dict[int, Any] = {401: ErrorOut, 422: ValidationErrorOut, 500: ErrorOut}
BODY_ERRORS: dict[int, Any] = {400: ErrorOut, 413: ErrorOut, 415: ErrorOut}
STATUS_TEXT = {
    400: "The body is not valid JSON (NaN and Infinity are not JSON).",
    401: "No API key, or an unknown or revoked one.",
    402: "Insufficient funds: the wallet cannot pay for the event; nothing was booked.",
    404: "No such customer or event for this API key.",
    409: "The event id was used before for another event of this customer, or the event "
    "cannot be reversed.",
    413: "The body is over the size limit (2.5 MB by default).",
    415: "The body was not sent as `application/json`.",
    422: "Bad input, one entry per field (`loc` names it): a wrong type or format, a value "
    "out of range, an unknown field, a forged cursor; in usage events also an unknown, "
    "inactive or foreign customer or product, a product without a price, or a timestamp "
    "out of the accepted window.",
    500: "An error on our side (logged; no details are sent). Retrying is safe.",
}


# Answered by gunicorn (`make run`, production) before the request reaches Django.
URL_TOO_LONG = {"description": "The URL is too long (gunicorn's limit: 4094 bytes)."}


def documented(responses: dict[int, Any]) -> dict[str, Any]:
    """`openapi_extra` giving each error status of `responses` its description, and
    the web server's own 414."""
    described = {code: {"description": STATUS_TEXT[code]} for code in responses
                 if code in STATUS_TEXT}  # fmt: skip
    return {"responses": {**described, 414: URL_TOO_LONG}}


USAGE_RESPONSES = {200: UsageOut, 402: ErrorOut, 409: ErrorOut, **COMMON_ERRORS, **BODY_ERRORS}
BATCH_RESPONSES = {200: UsageBatchOut, **COMMON_ERRORS, **BODY_ERRORS}
REVERSE_RESPONSES = {200: ReversalOut, 404: ErrorOut, 409: ErrorOut, 413: ErrorOut, **COMMON_ERRORS}
BALANCE_RESPONSES = {200: BalanceOut, 404: ErrorOut, **COMMON_ERRORS}
GRANTS_RESPONSES = {200: list[GrantOut], 404: ErrorOut, **COMMON_ERRORS}
TRANSACTIONS_RESPONSES = {200: list[TransactionOut], 404: ErrorOut, **COMMON_ERRORS}
