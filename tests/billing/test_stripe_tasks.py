"""The Celery side of Stripe: the event task and the beat sweep."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from billing import tasks
from billing.models import StripeCharge, StripeEvent
from tests.billing.stripe_fakes import intent_payload, pending_charge, stripe_event

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("stripe_settings")]


def test_the_sweep_is_scheduled_every_minute_by_default():
    task = PeriodicTask.objects.get(task="billing.tasks.sweep_stripe")
    assert (task.interval.every, task.interval.period) == (1, "minutes")
    assert task.enabled


def test_the_event_task_processes_by_stripe_event_id(alice, eager_celery, effects):
    charge = pending_charge(alice)
    event = stripe_event("payment_intent.succeeded", intent_payload(charge))
    StripeEvent.objects.create(event_id=event["id"], type=event["type"], payload=event)

    assert tasks.process_stripe_event.delay(event["id"]).get() == "processed"
    assert tasks.process_stripe_event.delay(event["id"]).get() == "processed"  # redelivery
    assert effects == [("succeeded", charge.pk)]


def test_the_sweep_picks_up_an_event_whose_task_was_lost(alice, effects):
    charge = pending_charge(alice)
    event = stripe_event("payment_intent.succeeded", intent_payload(charge))
    StripeEvent.objects.create(event_id=event["id"], type=event["type"], payload=event)

    assert tasks.sweep_stripe()["events"] == 0  # too fresh: its own task may still run
    with time_machine.travel(timezone.now() + timedelta(minutes=1), tick=False):
        assert tasks.sweep_stripe() == {"events": 1, "charges": 0, "effects": 0}
    charge.refresh_from_db()
    assert charge.status == StripeCharge.Status.SUCCEEDED
    assert effects == [("succeeded", charge.pk)]
