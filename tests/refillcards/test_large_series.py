"""A series of 100,000 cards through the background path (the task's batches): no
two codes alike, every code found by its hash, and the database holds no plain
code (not the typed form, not the printed one)."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from refillcards import codes, services
from refillcards.models import CardSeries, RefillCard
from tests.refillcards.conftest import STAFF

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
N = 100_000


def test_100000_codes_no_duplicates_and_no_plain_code_at_rest(alice, settings):
    settings.REFILL_CARD_SYNC_LIMIT = 1000
    settings.REFILL_CARD_BATCH = 20_000
    series = services.create_series(
        prefix="BG", quantity=N, amount=Decimal("5"), currency="USD", partner=alice.partner,
        valid_until=timezone.now() + timedelta(days=30), actor=STAFF,
    )  # fmt: skip
    assert services.generate_all(series.pk) == N
    series = CardSeries.objects.get(pk=series.pk)
    assert (series.status, series.generated) == ("ready", N)

    total, rows = services.export_rows(series=series, actor=STAFF, format="csv")
    printed = [row.code for row in rows]
    typed = [codes.normalise(code) for code in printed]
    assert total == N and len(set(typed)) == N
    assert RefillCard.objects.filter(series=series).values("code_hash").distinct().count() == N
    sample = typed[:: N // 100]
    found = RefillCard.objects.filter(code_hash__in=[codes.lookup_hash(c) for c in sample])
    assert found.count() == len(sample)

    # what a dump of the table holds
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM refillcards_refillcard")
        dump = "\n".join(repr(row) for row in cursor.fetchall())
    runs = set(re.findall(r"[0-9A-Z]{17,}", dump))
    assert runs.isdisjoint(typed)
    assert not re.search(r"BG-[0-9A-Z]{4}-", dump)
