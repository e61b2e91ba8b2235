"""Helpers for the Stripe tests: controls of our localstripe, signed webhook events."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.request
from decimal import Decimal

from billing.models import StripeCharge

API_KEY = "sk_test_x"
WEBHOOK_SECRET = "whsec_test_secret"


class FakeStripe:
    """Test controls of our localstripe wrapper (see localstripe_server.py)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _call(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def fail_next(self, path: str, mode: str, *, count: int = 1, delay: float = 0) -> None:
        """mode: error_before (500, nothing done), error_after (done, then 500),
        delay_after (done, answered after ``delay`` seconds)."""
        self._call(
            "POST", "/_config/faults", {"path": path, "mode": mode, "count": count, "delay": delay}
        )

    def clear_faults(self) -> None:
        self._call("DELETE", "/_config/faults")

    def send_webhooks_to(self, url: str, secret: str, *, events: list[str]) -> None:
        """localstripe then signs and POSTs these events to ``url`` (after ~1 s)."""
        self._call(
            "POST", "/_config/webhooks/tests", {"url": url, "secret": secret, "events": events}
        )

    def stop_webhooks(self) -> None:
        self.send_webhooks_to("http://127.0.0.1:9/", "unused", events=[])

    def requests_with_key(self, key: str) -> list[dict]:
        return [r for r in self._call("GET", "/_config/requests") if r["idempotency_key"] == key]

    def payment_intents_for(self, charge_id: int) -> list[dict]:
        intents = self._call("GET", "/v1/payment_intents?limit=100")["data"]
        return [i for i in intents if i["metadata"].get("stripe_charge_id") == str(charge_id)]


def sign(payload: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A Stripe-Signature header, computed as Stripe does (HMAC-SHA256 of "t.payload")."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def stripe_event(event_type: str, data_object: dict, *, event_id: str | None = None) -> dict:
    return {
        "id": event_id or f"evt_{time.monotonic_ns()}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "livemode": False,
        "api_version": "2025-01-27.acacia",
        "data": {"object": data_object},
    }


def post_event(client, event: dict, **sign_options):
    payload = json.dumps(event).encode()
    return client.post(
        "/stripe/webhook/",
        data=payload,
        content_type="application/json",
        headers={"Stripe-Signature": sign(payload, **sign_options)},
    )


def pending_charge(customer, *, intent_id="", amount="12.34") -> StripeCharge:
    return StripeCharge.objects.create(
        customer=customer,
        amount=Decimal(amount),
        currency="USD",
        purpose=StripeCharge.Purpose.TOP_UP,
        stripe_customer_id="cus_alice",
        payment_method_id="pm_alice",
        payment_intent_id=intent_id,
        initiated_by="test",
    )


def intent_payload(charge: StripeCharge, *, status="succeeded", intent_id="pi_123", **extra):
    return {
        "id": intent_id,
        "object": "payment_intent",
        "status": status,
        "amount": int(charge.amount * 100),
        "currency": charge.currency.lower(),
        "customer": charge.stripe_customer_id,
        "payment_method": charge.payment_method_id,
        "metadata": {"stripe_charge_id": str(charge.pk)},
        **extra,
    }
