"""Generate and store a series of 100,000 refill cards, then export it as CSV, and
compare with a raw COPY of 100,000 rows of the same width in the same run.

    .venv/bin/python -m config.devservers run --tmp -- .venv/bin/python bench/cards.py

Prints cards/s and where the time goes: making the codes (`secrets`), the HMAC,
the Fernet encryption, and the COPY itself (measured as the raw COPY of the very
rows generation wrote, into an empty copy of the table with the same indexes).
Targets (issue 17): generation + storage within 5x the raw COPY and under 10 s;
CSV export (decryption included) under 5 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cards", type=int, default=100_000)
    args = parser.parse_args()
    n = args.cards

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    call_command("migrate", verbosity=0)
    from billing.models import Partner
    from refillcards import codes, services
    from refillcards.export import csv_lines
    from refillcards.models import CardSeries, RefillCard
    from wallets.actors import Actor

    actor = Actor.system("bench")
    partner, _ = Partner.objects.get_or_create(name="Bench partner")
    settings.REFILL_CARD_SYNC_LIMIT = 0  # the background path, as a large series takes
    settings.REFILL_CARD_BATCH = 10_000

    # Where the time goes, in Python alone (no database).
    began = time.perf_counter()
    made = codes.new_codes("BN", n)
    t_codes = time.perf_counter() - began
    began = time.perf_counter()
    for code in made:
        codes.lookup_hash(code)
    t_hmac = time.perf_counter() - began
    began = time.perf_counter()
    tokens = [codes.encrypt(code) for code in made]
    t_fernet = time.perf_counter() - began
    began = time.perf_counter()
    for token in tokens:
        codes.decrypt(token)
    t_decrypt = time.perf_counter() - began
    del made, tokens

    # Generation + storage through the service and the task's loop.
    began = time.perf_counter()
    series = services.create_series(
        prefix="BN", quantity=n, amount=Decimal("10"), currency="USD", partner=partner,
        valid_until=timezone.now() + timedelta(days=365), actor=actor,
    )  # fmt: skip
    added = services.generate_all(series.pk)
    t_generate = time.perf_counter() - began
    assert added == n and RefillCard.objects.filter(series=series).count() == n

    # The floor: COPY the same rows (same width, already made) into an empty copy of
    # the table with the same indexes.
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_cards")
        cursor.execute("CREATE TABLE bench_cards (LIKE refillcards_refillcard INCLUDING ALL)")
        cursor.execute(
            "SELECT series_id, number, serial, code_hash, code_encrypted, valid_until, status, "
            "changed_at, redeemed_by FROM refillcards_refillcard WHERE series_id = %s",
            [series.pk],
        )
        rows = cursor.fetchall()
    began = time.perf_counter()
    with connection.cursor() as cursor:
        with cursor.copy(
            "COPY bench_cards (series_id, number, serial, code_hash, code_encrypted, "
            "valid_until, status, changed_at, redeemed_by) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
    t_copy = time.perf_counter() - began
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE bench_cards")
    del rows

    # Export as CSV (decryption included).
    series = CardSeries.objects.get(pk=series.pk)
    began = time.perf_counter()
    size = lines = 0
    for line in csv_lines(series, actor=actor):
        size += len(line)
        lines += 1
    t_export = time.perf_counter() - began
    assert lines == n + 1

    print(f"cards: {n:,}")
    print("in Python alone:")
    print(f"  codes (secrets)     {t_codes:6.2f} s")
    print(f"  HMAC-SHA256         {t_hmac:6.2f} s")
    print(f"  Fernet encrypt      {t_fernet:6.2f} s")
    print(f"  Fernet decrypt      {t_decrypt:6.2f} s")
    print(f"generate + store:     {t_generate:6.2f} s  ({n / t_generate:,.0f} cards/s)")
    print(f"raw COPY, same rows:  {t_copy:6.2f} s  ({n / t_copy:,.0f} rows/s)")
    print(f"ratio:                {t_generate / t_copy:6.2f} x the raw COPY (target < 5)")
    print(f"CSV export:           {t_export:6.2f} s  ({size / 1e6:.1f} MB, target < 5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
