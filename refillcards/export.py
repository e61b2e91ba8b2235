"""A series' cards as CSV (streamed, any size) or as a printable PDF (WeasyPrint,
ten cards per A4 page: code, serial, value, valid until). Both log the export
(refillcards.services.export_rows) and decrypt the codes as they go."""

from __future__ import annotations

import csv
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from django.template.loader import render_to_string

from refillcards import services
from refillcards.errors import CardStateError
from refillcards.models import CardSeries
from wallets.actors import Actor

CSV_HEADER = ["serial", "code", "value", "currency", "valid_until", "status"]
# WeasyPrint lays out every page in memory: beyond this many cards, export CSV (or
# print from it).
PDF_MAX_CARDS = 5000


class _Line:
    """csv.writer target that hands back the line it was given."""

    def write(self, value: str) -> str:
        return value


def csv_lines(series: CardSeries, *, actor: Actor) -> Iterator[str]:
    _, rows = services.export_rows(series=series, actor=actor, format="csv")
    writer = csv.writer(_Line())
    yield writer.writerow(CSV_HEADER)
    for row in rows:
        yield writer.writerow(
            [row.serial, row.code, f"{row.amount:.2f}", row.currency,
             row.valid_until.date().isoformat(), row.status]
        )  # fmt: skip


def csv_response(series: CardSeries, *, actor: Actor) -> StreamingHttpResponse:
    lines = csv_lines(series, actor=actor)
    first = next(lines)  # logs the export now, not when the client reads
    response = StreamingHttpResponse(_chain(first, lines), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="refill-cards-series-{series.pk}.csv"'
    response["Cache-Control"] = "no-store"
    return response


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def render_pdf(series: CardSeries, *, actor: Actor) -> bytes:
    from weasyprint import HTML  # heavy import, only when a PDF is asked for

    total, rows = services.export_rows(series=series, actor=actor, format="pdf")
    if total > PDF_MAX_CARDS:
        raise CardStateError(
            f"a PDF holds at most {PDF_MAX_CARDS:,} cards; this series has {total:,}. "
            "Export it as CSV instead."
        )
    html = render_to_string("refillcards/cards_pdf.html", {"series": series, "cards": list(rows)})
    return HTML(string=html, base_url=str(settings.BASE_DIR)).write_pdf()


def pdf_response(series: CardSeries, *, actor: Actor) -> HttpResponse:
    response = HttpResponse(render_pdf(series, actor=actor), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="refill-cards-series-{series.pk}.pdf"'
    response["Cache-Control"] = "no-store"
    return response
