"""Usage events: rate each one by the catalogue and draw it down from the
customer's wallet in real time (Amberflo: "usage is drawn down against the
Wallet balance in real time").

Rules:
- Rating (`billing.usage.rating`): the best matching price in force at the event's
  timestamp × quantity, rounded ROUND_HALF_UP to 6 places, once per event.
- Idempotency: `event_id` is unique per customer, whichever API key sends it.
  The ledger key is `usage:<customer id>:<event id>`, so two requests racing
  with the same event book once (they meet at the wallet lock / the ledger's
  unique key) and both get the first answer. The same event id with a different
  product, quantity, dimensions or timestamp is a conflict (409).
- A refused event (insufficient funds) is recorded with status `refused` so
  staff can see it, but nothing was booked: sending it again after a top-up
  tries again. A booked (or reversed) event is never booked twice.
- Draw-down uses the event's timestamp as business time: grants effective and
  not expired at that moment pay for it, and conditional grants only for usage
  that matches their product item and dimensions (`wallets.services.draw_down`).
- Bad input is refused with one `FieldProblem` per field, before anything is
  written; in a batch each event stands alone.

- Booking: one database transaction per customer (wallet) holding one
  `wallets.services.draw_down_batch` call for all its events, then the usage
  event rows; a single event is a batch of one.

Every ledger write goes through `wallets.services`; this module only records
`UsageEvent` rows and reads wallets for the answer.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.errors import (
    FieldProblem,
    UsageConflict,
    UsageError,
    UsageNotFound,
    UsageNotReversible,
    UsageRefused,
    UsageRejected,
)
from billing.models import ApiKey, Customer, UsageEvent
from billing.money import decimal_text
from billing.usage.answers import figures_after_each, reversal_lots
from billing.usage.rating import (
    RatedEvent,
    UsageInput,
    UsageLookups,
    check_event,
    prepared_cursor,
    price_event,
    rate,
)
from wallets import errors as wallet_errors
from wallets import services
from wallets.actors import Actor
from wallets.models import LedgerTransaction

__all__ = [
    "ReversalOutcome",
    "UsageInput",
    "UsageOutcome",
    "rate",
    "record_usage",
    "record_usage_batch",
    "reverse_usage",
    "usage_response",
]

# --- input and output ----------------------------------------------------------------


@dataclass(frozen=True)
class UsageOutcome:
    """A booked event: `response` is the API answer (JSON-ready), `replayed` says
    whether this call found it already booked. `event` loads the `UsageEvent` row
    on first access: the booking path writes rows without model instances (a model
    instance per event was a fifth of a batch's Python time)."""

    event_pk: int
    response: dict[str, Any]
    replayed: bool = False
    loaded: UsageEvent | None = field(default=None, repr=False, compare=False)

    @property
    def event(self) -> UsageEvent:
        if self.loaded is None:
            object.__setattr__(self, "loaded", UsageEvent.objects.get(pk=self.event_pk))
        assert self.loaded is not None
        return self.loaded


@dataclass(frozen=True)
class ReversalOutcome:
    event: UsageEvent
    response: dict[str, Any]
    replayed: bool = False


# --- the flows -------------------------------------------------------------------------


def record_usage(*, event: UsageInput, actor: Actor, api_key: ApiKey | None = None) -> UsageOutcome:
    """Rate one event and draw it down. Raises a `UsageError` (nothing booked):
    `UsageRejected` (422, bad input), `UsageRefused` (402, insufficient funds),
    `UsageConflict` (409, event id reused for another event)."""
    (result,) = record_usage_batch(events=[event], actor=actor, api_key=api_key)
    if isinstance(result, UsageError):
        raise result
    return result


def record_usage_batch(
    *, events: Sequence[UsageInput], actor: Actor, api_key: ApiKey | None = None
) -> list[UsageOutcome | UsageError]:
    """Rate and draw down many events; one result per event, in order: a
    `UsageOutcome`, or the `UsageError` that says why that event was not booked.
    Valid events are booked even when others in the batch are not.

    Lookups (customers, products, prices, earlier events, wallets) are done once
    for the whole batch; booking happens per wallet in `_book_wallet_events`."""
    limit = settings.USAGE_BATCH_MAX_EVENTS
    if not events:
        raise UsageRejected([FieldProblem("events", "send at least one event.")])
    if len(events) > limit:
        raise UsageRejected(
            [
                FieldProblem(
                    "events",
                    f"a batch holds at most {limit} events, got {len(events)}; "
                    "split it into smaller batches.",
                )
            ]
        )
    found = UsageLookups.for_events(events, api_key=api_key)
    results: list[UsageOutcome | UsageError | None] = [None] * len(events)
    to_book: list[tuple[int, RatedEvent]] = []
    for index, raw in enumerate(events):
        try:
            prepared = _prepare(raw, found)
        except UsageError as exc:
            results[index] = exc
            continue
        if isinstance(prepared, UsageOutcome):
            results[index] = prepared
        else:
            to_book.append((index, prepared))
    for index, outcome in _book(to_book, actor=actor, api_key=api_key):
        results[index] = outcome
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def reverse_usage(*, event: UsageEvent | int, actor: Actor) -> ReversalOutcome:
    """Undo a booked event: the ledger reverses its draw-down (credit goes back to
    the very grants it came from, with their original expiry; debt it created is
    cancelled) and the event is marked reversed. Nothing is edited in place.
    Reversing again returns the first answer."""
    event_pk = event.pk if isinstance(event, UsageEvent) else event
    with transaction.atomic():
        try:
            locked = (
                UsageEvent.objects.select_for_update(of=("self",))
                .select_related("customer", "product_item")
                .get(pk=event_pk)
            )
        except UsageEvent.DoesNotExist:
            raise UsageNotFound(f"usage event {event_pk} does not exist.") from None
        if locked.status == UsageEvent.Status.REVERSED:
            return ReversalOutcome(locked, locked.reversal_response, replayed=True)
        if locked.status == UsageEvent.Status.REFUSED:
            raise UsageNotReversible(
                f"usage event {locked.event_id!r} was refused, so nothing was booked and "
                "there is nothing to reverse."
            )
        lots: list[tuple[int, Decimal]] = []
        reversal_id = None
        if locked.transaction_id is not None:
            try:
                reversal = services.reverse(
                    transaction_id=locked.transaction_id,
                    actor=actor,
                    idempotency_key=f"usage-reversal:{locked.customer_id}:{locked.event_id}",
                    memo=f"Reversal of usage event {locked.event_id}",
                )
            except wallet_errors.NotReversible as exc:
                # Staff may have reversed the draw-down in the ledger directly: then
                # the event is reversed already, by that transaction.
                by_staff = LedgerTransaction.objects.filter(
                    reverses_id=locked.transaction_id
                ).first()
                if by_staff is None:
                    raise UsageNotReversible(str(exc)) from None
                reversal = by_staff
            except wallet_errors.WalletError as exc:
                raise UsageNotReversible(str(exc)) from None
            reversal_id = reversal.pk
            lots = [
                (grant_id, -amount) for grant_id, amount in reversal_lots(reversal) if amount < 0
            ]
        now = timezone.now()
        locked.status = UsageEvent.Status.REVERSED
        locked.reversed_at = now
        locked.reversed_by = actor.label
        locked.reversal_transaction_id = reversal_id
        locked.reversal_response = {
            "id": locked.pk,
            "event_id": locked.event_id,
            "status": locked.status,
            "amount": decimal_text(locked.amount),
            "currency": locked.currency,
            "transaction_id": reversal_id,
            "reversed_transaction_id": locked.transaction_id,
            "grants": [
                {"grant_id": grant_id, "amount": decimal_text(amount)} for grant_id, amount in lots
            ],
            "reversed_at": now.isoformat(),
            **figures_after_each(locked.wallet_id, [None])[0],
        }
        locked.save(
            update_fields=[
                "status",
                "reversed_at",
                "reversed_by",
                "reversal_transaction_id",
                "reversal_response",
            ]
        )
    return ReversalOutcome(locked, locked.reversal_response)


def usage_response(event: UsageEvent) -> dict[str, Any]:
    """The answer for a booked event: what was returned when it was booked, with
    its current status."""
    return _response(event.pk, event.status, event.response)


def _response(pk: int, status: str, stored: dict[str, Any]) -> dict[str, Any]:
    return {"id": pk, "status": status, **stored}


def _prepare(raw: UsageInput, found: UsageLookups) -> RatedEvent | UsageOutcome:
    """Check and rate one event, or find that it was booked already (a replay, or a
    409 if this event id was booked with other content)."""
    checked = check_event(raw, found)
    earlier = checked.earlier
    if earlier is not None and earlier.status != UsageEvent.Status.REFUSED:
        return _replay(earlier, checked.fingerprint)
    return price_event(checked, found)


def _replay(earlier: UsageEvent, fingerprint: str) -> UsageOutcome:
    if earlier.fingerprint != fingerprint:
        answer = earlier.response
        raise UsageConflict(
            f"event_id {earlier.event_id!r} was already used for another event of this "
            f"customer (product {answer.get('product')!r}, quantity {answer.get('quantity')}, "
            f"timestamp {answer.get('timestamp')}); send a new event_id for a new event."
        )
    return UsageOutcome(earlier.pk, usage_response(earlier), replayed=True, loaded=earlier)


# --- booking -------------------------------------------------------------------------


def _book(
    rated: list[tuple[int, RatedEvent]], *, actor: Actor, api_key: ApiKey | None
) -> list[tuple[int, UsageOutcome | UsageError]]:
    """Book rated events customer by customer (one wallet each), keeping each
    customer's events in the order they were sent."""
    by_customer: dict[int, list[tuple[int, RatedEvent]]] = defaultdict(list)
    for index, event in rated:
        by_customer[event.customer.pk].append((index, event))
    results: list[tuple[int, UsageOutcome | UsageError]] = []
    for events in by_customer.values():
        results.extend(_book_wallet_events(events, actor=actor, api_key=api_key))
    return results


class _Replay:
    """Marker: this event was booked before (by an earlier event in the batch or a
    concurrent request); answer as that booking did once it is committed."""


REPLAY = _Replay()


def _book_wallet_events(
    events: list[tuple[int, RatedEvent]], *, actor: Actor, api_key: ApiKey | None
) -> list[tuple[int, UsageOutcome | UsageError]]:
    """Book one customer's events, in order, in one database transaction: one
    `draw_down_batch` call for all of them (one wallet lock, one round trip; each
    event stands alone, so a refused one leaves the others booked), then all usage
    event rows at once. The draw-down runs without a savepoint of its own (this
    transaction holds nothing else); in the rare case it needs one (a ledger key
    racing in from another wallet), the whole transaction is tried again with it."""
    try:
        return _book_in_transaction(events, actor=actor, api_key=api_key, savepoint=False)
    except IntegrityError:
        return _book_in_transaction(events, actor=actor, api_key=api_key, savepoint=True)


def _book_in_transaction(
    events: list[tuple[int, RatedEvent]],
    *,
    actor: Actor,
    api_key: ApiKey | None,
    savepoint: bool,
) -> list[tuple[int, UsageOutcome | UsageError]]:
    customer = events[0][1].customer
    wallet_id = events[0][1].wallet_id or services.open_wallet(customer=customer).pk
    now = timezone.now()
    # An event id sent twice in one batch is booked once; the repeat answers as the first.
    seen: set[str] = set()
    repeats: set[int] = set()
    for pos, (_, event) in enumerate(events):
        if event.event_id in seen:
            repeats.add(pos)
        seen.add(event.event_id)
    to_draw = [pos for pos, (_, e) in enumerate(events) if pos not in repeats and e.amount]
    with transaction.atomic():
        draws: dict[int, services.DrawDown | wallet_errors.WalletError] = {}
        if len(to_draw) == 1:  # one event: the one-event draw-down (wallets 0008/0009)
            (pos,) = to_draw
            draws[pos] = _draw_one(_charge(events[pos][1]), wallet_id, actor, savepoint=savepoint)
        elif to_draw:
            results = services.draw_down_batch(
                wallet=wallet_id,
                charges=[_charge(events[pos][1]) for pos in to_draw],
                actor=actor,
                savepoint=savepoint,
            )
            draws = dict(zip(to_draw, results, strict=True))
        # What each event changed, in order (None: it moved nothing).
        changes = [
            d if isinstance(d, services.DrawDown) and not d.replayed else None
            for d in (draws.get(pos) for pos in range(len(events)))
        ]
        figures = figures_after_each(wallet_id, changes)
        outcomes: list[dict[str, Any] | UsageError | _Replay] = []
        booked: list[dict[str, Any]] = []
        refused: list[tuple[RatedEvent, str]] = []
        for pos, (_, event) in enumerate(events):
            draw = draws.get(pos)
            if pos in repeats or (isinstance(draw, services.DrawDown) and draw.replayed):
                outcomes.append(REPLAY)
            elif isinstance(draw, wallet_errors.InsufficientFunds):
                refused.append((event, str(draw)))
                outcomes.append(
                    UsageRefused(str(draw), needed=draw.needed, available=draw.available)
                )
            elif isinstance(draw, wallet_errors.IdempotencyConflict):
                outcomes.append(REPLAY)  # booked before, with other content: 409 below
            elif isinstance(draw, wallet_errors.WalletError):
                error = UsageError(str(draw))
                error.status_code = draw.status_code
                outcomes.append(error)
            else:
                row = _stored_row(event, draw, _answer(event, draw, figures[pos]))
                booked.append(row)
                outcomes.append(row)
        if refused:
            _record_refusals(refused, wallet_id=wallet_id, actor=actor, api_key=api_key, at=now)
        if booked:
            stored = _store_booked(
                booked,
                customer=customer,
                wallet_id=wallet_id,
                api_key=api_key,
                actor=actor,
                received_at=now,
            )
            for row in booked:
                row["id"] = stored.get(row["event_id"])
            outcomes = [REPLAY if isinstance(o, dict) and o["id"] is None else o for o in outcomes]
    answers: list[tuple[int, UsageOutcome | UsageError]] = []
    for (index, event), outcome in zip(events, outcomes, strict=True):
        if isinstance(outcome, dict):
            response = _response(outcome["id"], UsageEvent.Status.BOOKED.value, outcome["response"])
            answers.append((index, UsageOutcome(outcome["id"], response)))
        elif isinstance(outcome, _Replay):
            answers.append((index, _booked_before(event)))
        else:
            answers.append((index, outcome))
    return answers


def _draw_one(
    charge: services.UsageCharge, wallet_id: int, actor: Actor, *, savepoint: bool
) -> services.DrawDown | wallet_errors.WalletError:
    """`services.draw_down` of one charge, answering as `draw_down_batch` would (the
    error instead of raising it)."""
    try:
        return services.draw_down(
            wallet=wallet_id, amount=charge.amount, actor=actor,
            idempotency_key=charge.idempotency_key, item_id=charge.item_id,
            dimensions=charge.dimensions, at=charge.at, memo=charge.memo,
            reference=charge.reference, metadata=charge.metadata, savepoint=savepoint,
        )  # fmt: skip
    except wallet_errors.WalletError as exc:
        return exc


def _charge(event: RatedEvent) -> services.UsageCharge:
    """The ledger charge for a rated event, drawn at the event's own time."""
    return services.UsageCharge(
        amount=event.amount,
        idempotency_key=event.ledger_key,
        item_id=event.product.pk,
        dimensions=event.dimensions,
        at=event.timestamp,
        memo=f"{event.product.name}: {decimal_text(event.quantity)} {event.product.unit}",
        reference=event.event_id,
        metadata={"usage_event": event.event_id, "product": event.product.code},
    )


def _answer(
    event: RatedEvent, draw: services.DrawDown | None, figures: dict[str, str]
) -> dict[str, Any]:
    """The API answer for a booked event (stored, and returned again on replay)."""
    return {
        "event_id": event.event_id,
        "customer": event.customer.account_number,
        "product": event.product.code,
        "quantity": decimal_text(event.quantity),
        "dimensions": event.dimensions,
        "timestamp": event.timestamp.isoformat(),
        "unit_price": decimal_text(event.price.unit_price),
        "amount": decimal_text(event.amount),
        "currency": event.customer.currency,
        "from_credits": decimal_text(draw.from_credits if draw else Decimal(0)),
        "to_debt": decimal_text(draw.to_debt if draw else Decimal(0)),
        "grants": [
            {"grant_id": grant_id, "amount": decimal_text(amount)}
            for grant_id, amount in (draw.lots if draw else ())
        ],
        "transaction_id": draw.transaction_id if draw else None,
        **figures,
    }


def _stored_row(
    event: RatedEvent, draw: services.DrawDown | None, response: dict[str, Any]
) -> dict[str, Any]:
    """A booked event as `STORE_BOOKED_SQL` reads it (what a batch shares, such as
    the wallet and the API key, is sent once beside the rows)."""
    return {
        "product_item_id": event.product.pk,
        "event_id": event.event_id,
        "quantity": str(event.quantity),
        "dimensions": event.dimensions,
        "at": event.timestamp.isoformat(),
        "price_id": event.price.pk,
        "unit_price": str(event.price.unit_price),
        "amount": str(event.amount),
        "transaction_id": draw.transaction_id if draw else None,
        "fingerprint": event.fingerprint,
        "response": response,
    }


# Booked events of one customer in one statement (prepared; the rows travel as one
# JSON document): an insert, or the booking of an event that an earlier attempt
# recorded as refused. A booking already there is left alone (and not returned).
# It lists every column: keep it in step with UsageEvent (every test books with it).
STORE_BOOKED_SQL = """
INSERT INTO billing_usageevent AS e
    (customer_id, product_item_id, event_id, quantity, dimensions, "timestamp", price_id,
     unit_price, amount, currency, status, message, wallet_id, transaction_id,
     reversal_transaction_id, fingerprint, response, reversal_response, api_key_id, actor,
     received_at, reversed_at, reversed_by)
SELECT %(customer_id)s, b.product_item_id, b.event_id, b.quantity, b.dimensions, b.at,
       b.price_id, b.unit_price, b.amount, %(currency)s, 'booked', '', %(wallet_id)s,
       b.transaction_id, NULL, b.fingerprint, b.response, '{}'::jsonb, %(api_key_id)s,
       %(actor)s, %(received_at)s, NULL, ''
FROM jsonb_to_recordset(%(rows)s::jsonb) AS b(
    product_item_id bigint, event_id text, quantity numeric, dimensions jsonb, at timestamptz,
    price_id bigint, unit_price numeric, amount numeric, transaction_id bigint,
    fingerprint text, response jsonb)
ON CONFLICT (customer_id, event_id) DO UPDATE SET
    product_item_id = EXCLUDED.product_item_id, quantity = EXCLUDED.quantity,
    dimensions = EXCLUDED.dimensions, "timestamp" = EXCLUDED."timestamp",
    price_id = EXCLUDED.price_id, unit_price = EXCLUDED.unit_price, amount = EXCLUDED.amount,
    currency = EXCLUDED.currency, status = EXCLUDED.status, message = EXCLUDED.message,
    wallet_id = EXCLUDED.wallet_id, transaction_id = EXCLUDED.transaction_id,
    fingerprint = EXCLUDED.fingerprint, response = EXCLUDED.response,
    api_key_id = EXCLUDED.api_key_id, actor = EXCLUDED.actor, received_at = EXCLUDED.received_at
WHERE e.status = 'refused'
RETURNING id, event_id
"""


def _store_booked(
    rows: list[dict[str, Any]],
    *,
    customer: Customer,
    wallet_id: int,
    api_key: ApiKey | None,
    actor: Actor,
    received_at: datetime,
) -> dict[str, int]:
    """Write one customer's booked events (`_stored_row`); returns the ids of the
    rows stored, by event id."""
    params = {
        "rows": json.dumps(rows),
        "customer_id": customer.pk,
        "currency": customer.currency,
        "wallet_id": wallet_id,
        "api_key_id": api_key.pk if api_key is not None else None,
        "actor": actor.label,
        "received_at": received_at,
    }
    with prepared_cursor() as cursor:
        cursor.execute(STORE_BOOKED_SQL, params, prepare=True)
        return {event_id: pk for pk, event_id in cursor.fetchall()}


def _booked_before(event: RatedEvent) -> UsageOutcome | UsageError:
    """Answer as the booking of this event id did (or 409 if its content differs)."""
    earlier = UsageEvent.objects.filter(customer=event.customer, event_id=event.event_id).first()
    if earlier is None or earlier.status == UsageEvent.Status.REFUSED:
        return UsageConflict(
            f"the ledger already holds a booking under this event's key ({event.ledger_key!r}) "
            "but no usage event records it; send a new event_id and tell staff."
        )
    try:
        return _replay(earlier, event.fingerprint)
    except UsageConflict as exc:
        return exc


def _record_refusals(
    refused: list[tuple[RatedEvent, str]],
    *,
    wallet_id: int,
    actor: Actor,
    api_key: ApiKey | None,
    at: datetime,
) -> None:
    """Keep a visible record of each refusal (the latest attempt wins); never
    overwrite a booking of the same event."""
    common = {"wallet_id": wallet_id, "api_key": api_key, "actor": actor.label, "received_at": at}
    UsageEvent.objects.bulk_create(
        [
            event.row(
                status=UsageEvent.Status.REFUSED,
                message=message,
                api_key=api_key,
                wallet_id=wallet_id,
                actor=actor.label,
                received_at=at,
            )  # fmt: skip
            for event, message in refused
        ],
        ignore_conflicts=True,
    )
    for event, message in refused:
        UsageEvent.objects.filter(
            customer=event.customer, event_id=event.event_id, status=UsageEvent.Status.REFUSED
        ).exclude(fingerprint=event.fingerprint, message=message).update(
            product_item=event.product,
            quantity=event.quantity,
            dimensions=event.dimensions,
            timestamp=event.timestamp,
            price=event.price,
            unit_price=event.price.unit_price,
            amount=event.amount,
            fingerprint=event.fingerprint,
            message=message,
            **common,
        )
