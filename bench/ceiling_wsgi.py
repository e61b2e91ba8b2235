"""The product's WSGI application plus two bench-only routes, for
`bench/usage_api.py --ceiling`: how fast can ANY usage API be on this box, given
the HTTP stack and the draw-down it must do?

- `POST /bench/draw-down`: the body of a `POST /api/v1/usage` (one event);
  authenticates the API key as the usage API does (`billing.api.ApiKeyAuth`),
  then `wallets.services.draw_down` of the event's cost on the customer's wallet.
- `POST /bench/draw-down-batch`: the body of a `POST /api/v1/usage/batch`; the
  same authentication, then one `wallets.services.draw_down_batch` for all events
  (one customer's, as the benchmark sends them).

Same gunicorn, same Django middleware and settings, same ledger booking as the
real endpoints; no rating, no usage event rows, no per-event answer. Never
served by the product: gunicorn loads this module only in the benchmark
(`--pythonpath bench ceiling_wsgi`).
"""

from __future__ import annotations

import json
import os
from decimal import Decimal

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402

from billing.api.auth import ApiKeyAuth  # noqa: E402
from billing.models import Price, ProductItem  # noqa: E402
from wallets import services  # noqa: E402
from wallets.actors import Actor  # noqa: E402
from wallets.models import Wallet  # noqa: E402

AUTH = ApiKeyAuth()
WALLETS: dict[str, int] = {}  # account number → wallet id (USD), loaded once
PRICES: dict[str, tuple[int, Decimal]] = {}  # product code → (item id, unit price)


def _lookup(account: str, product: str) -> tuple[int, int, Decimal]:
    if not WALLETS:
        WALLETS.update(
            Wallet.objects.filter(currency="USD").values_list("customer__account_number", "id")
        )
    if product not in PRICES:
        item = ProductItem.objects.get(code=product)
        price = Price.objects.filter(product_item=item, currency="USD").latest("effective_from")
        PRICES[product] = (item.pk, price.unit_price)
    item_id, unit_price = PRICES[product]
    return WALLETS[account], item_id, unit_price


@csrf_exempt
def draw_down(request: HttpRequest) -> HttpResponse:
    key = AUTH(request)
    assert key is not None
    event = json.loads(request.body)
    wallet_id, item_id, unit_price = _lookup(event["customer"], event["product"])
    services.draw_down(
        wallet=wallet_id,
        amount=Decimal(event["quantity"]) * unit_price,
        actor=Actor.api_key(key),
        idempotency_key=f"ceiling:{event['event_id']}",
        item_id=item_id,
    )
    return JsonResponse({"booked": 1})


@csrf_exempt
def draw_down_batch(request: HttpRequest) -> HttpResponse:
    key = AUTH(request)
    assert key is not None
    events = json.loads(request.body)["events"]
    wallet_id, item_id, unit_price = _lookup(events[0]["customer"], events[0]["product"])
    results = services.draw_down_batch(
        wallet=wallet_id,
        charges=[
            services.UsageCharge(
                amount=Decimal(e["quantity"]) * unit_price,
                idempotency_key=f"ceiling:{e['event_id']}",
                item_id=item_id,
            )
            for e in events
        ],
        actor=Actor.api_key(key),
    )
    return JsonResponse({"booked": sum(isinstance(r, services.DrawDown) for r in results)})


urlpatterns = [
    path("bench/draw-down", draw_down),
    path("bench/draw-down-batch", draw_down_batch),
    path("", django.urls.include(settings.ROOT_URLCONF)),
]
settings.ROOT_URLCONF = __name__
application = get_wsgi_application()
