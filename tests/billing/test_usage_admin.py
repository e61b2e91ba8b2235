"""Staff manage the catalogue (product items with prices) and see and reverse usage."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from billing.models import Price, ProductItem, UsageEvent
from billing.usage.recording import UsageInput, record_usage
from wallets.actors import Actor
from wallets.models import LedgerTransaction, Wallet

pytestmark = pytest.mark.django_db
ITEMS = "/admin/billing/productitem/"
EVENTS = "/admin/billing/usageevent/"


@pytest.fixture
def staff_client(client, db):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def item_form(**prices):
    """The add form of a product item with price rows: prices={"0": {...}, ...}."""
    data = {
        "code": "minutes",
        "name": "Voice minutes",
        "unit": "minute",
        "active": "on",
        "prices-TOTAL_FORMS": str(len(prices)),
        "prices-INITIAL_FORMS": "0",
        "prices-MIN_NUM_FORMS": "0",
        "prices-MAX_NUM_FORMS": "1000",
    }
    for n, row in prices.items():
        for field, value in row.items():
            data[f"prices-{n}-{field}"] = value
    return data


def test_a_product_item_is_created_with_its_prices_inline(staff_client):
    form = item_form(
        **{
            "0": {"currency": "USD", "unit_price": "0.02", "dimensions": "{}",
                  "effective_from_0": "2026-01-01", "effective_from_1": "00:00:00"},
            "1": {"currency": "USD", "unit_price": "0.015", "dimensions": '{"region": "eu"}',
                  "effective_from_0": "2026-01-01", "effective_from_1": "00:00:00"},
        }
    )  # fmt: skip

    response = staff_client.post(f"{ITEMS}add/", form)

    assert response.status_code == 302, response.context["errors"] if response.context else ""
    item = ProductItem.objects.get(code="minutes")
    assert sorted((p.unit_price, tuple(p.dimensions.items())) for p in item.prices.all()) == [
        (Decimal("0.015"), (("region", "eu"),)),
        (Decimal("0.02"), ()),
    ]
    listing = staff_client.get(ITEMS, {"q": "voice"}).content.decode()
    assert "minutes" in listing and "0.015 USD [region=eu]" in listing


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"dimensions": '{"region": ["eu"]}'}, "must be a string or an integer, got a list"),
        ({"dimensions": '"eu"'}, "must be a JSON object of name to value"),
        ({"unit_price": "0.0000001"}, "Ensure that there are no more than 6 decimal places"),
        ({"unit_price": "-1"}, "Ensure this value is greater than or equal to 0"),
    ],
)
def test_bad_prices_are_refused_on_the_form(staff_client, row, message):
    price_row = {"currency": "USD", "unit_price": "0.02", "dimensions": "{}",
                 "effective_from_0": "2026-01-01", "effective_from_1": "00:00:00", **row}  # fmt: skip

    response = staff_client.post(f"{ITEMS}add/", item_form(**{"0": price_row}))

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not ProductItem.objects.exists()


def test_product_items_filter_by_price_in_force(staff_client, calls, price):
    other = ProductItem.objects.create(code="unpriced", name="Unpriced")
    price(calls, "1")

    priced = staff_client.get(ITEMS, {"priced": "yes"}).content.decode()
    unpriced = staff_client.get(ITEMS, {"priced": "no"}).content.decode()

    assert "api-calls" in priced and other.code not in priced
    assert other.code in unpriced and "api-calls" not in unpriced
    assert staff_client.get("/admin/billing/price/", {"currency": "USD"}).status_code == 200


def test_usage_events_are_read_only_and_reversible_behind_a_confirmation(
    staff_client, alice, calls, price, credit
):
    price(calls, "1")
    credit(alice, "10")
    booked = record_usage(
        event=UsageInput("e1", alice.account_number, "api-calls", Decimal("4")),
        actor=Actor.system("meter"),
    )
    page = staff_client.get(f"{EVENTS}{booked.event.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert staff_client.get(f"{EVENTS}add/").status_code == 403
    assert b"e1" in staff_client.get(EVENTS, {"status__exact": "booked"}).content
    form = {"action": "reverse", "_selected_action": [booked.event.pk]}

    confirm = staff_client.post(EVENTS, form)
    assert b"Reverse these usage events?" in confirm.content
    assert UsageEvent.objects.get().status == "booked"

    done = staff_client.post(EVENTS, {**form, "post": "yes"}, follow=True)

    assert "Reverse usage: 1 reversed." in messages_of(done)
    event = UsageEvent.objects.get()
    assert event.status == "reversed" and event.reversed_by == "user:root"
    assert LedgerTransaction.objects.filter(kind="reversal").count() == 1
    assert Wallet.objects.get(customer=alice).credit_balance == Decimal("10")
    again = staff_client.post(EVENTS, form, follow=True)
    assert "refused or already reversed are left alone" in " ".join(messages_of(again))


def test_a_price_used_by_usage_cannot_be_deleted(alice, calls, price, credit):
    from django.db.models import ProtectedError

    used = price(calls, "1")
    credit(alice, "10")
    record_usage(
        event=UsageInput("e1", alice.account_number, "api-calls", Decimal("1")),
        actor=Actor.system("meter"),
    )
    with pytest.raises(ProtectedError):
        Price.objects.filter(pk=used.pk).delete()
