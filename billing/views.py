"""Stripe's webhook endpoint. Thin: verification and storage live in billing.stripe.webhooks."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing.errors import WebhookRejected
from billing.stripe.webhooks import receive_stripe_event
from billing.tasks import enqueue_stripe_event


@csrf_exempt  # Stripe signs the body instead; the signature is checked below
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    try:
        event, created = receive_stripe_event(
            payload=request.body, signature_header=request.headers.get("Stripe-Signature", "")
        )
    except WebhookRejected as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    if created:  # stored and committed; the sweep also takes it if this enqueue is lost
        enqueue_stripe_event(event.event_id)
    return JsonResponse({"received": event.event_id, "duplicate": not created})
