"""Hostile input to the refill card forms (portal redeem, admin generate and redeem)
and URLs: a clear error naming the field, never a 500, nothing changed."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from refillcards.models import CardSeries, RefillCard
from tests.factories import CustomerFactory, PartnerFactory
from wallets.models import CreditGrant

pytestmark = pytest.mark.django_db

HOSTILE_CODES = {
    "NUL": "\x00", "NUL inside": "NW-ABCD\x00-EFGH", "huge": "A" * 100_000, "empty": "",
    "spaces": "   ", "emoji": "🎟" * 20, "RTL override": "\u202eNW-1",
    "SQL": "' OR 1=1 --", "HTML": "<script>alert(1)</script>", "one char": "Z",
}  # fmt: skip


@pytest.fixture
def portal(alice) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(alice.portal_users.get().user)
    return client


@pytest.fixture
def staff() -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


def test_hostile_codes_in_the_portal_are_400_on_the_code_field(portal, series_of):
    series_of(1)
    wrong = []
    for name, value in HOSTILE_CODES.items():
        response = portal.post("/portal/refill-card/", {"code": value})
        errors = response.context["form"].errors.get("code") if response.context else None
        if response.status_code not in (400, 429) or not errors:
            wrong.append(f"{name}: {response.status_code}")
    assert wrong == []
    assert not CreditGrant.objects.exists()
    assert RefillCard.objects.get().status == "active"


def test_raw_bodies_to_the_portal_page_are_never_a_500(portal, series_of):
    series_of(1)
    for body, content_type in [
        (b"code=%ED%A0%80", "application/x-www-form-urlencoded"),  # not UTF-8
        (b"code=a&code=b", "application/x-www-form-urlencoded"),
        (b"\xff\xfe", "application/x-www-form-urlencoded"),
        (b'{"code": "x"}', "application/json"),
    ]:
        response = portal.post("/portal/refill-card/", body, content_type=content_type)
        assert response.status_code in (400, 429), (body, response.status_code)


def test_another_partners_customer_cannot_see_the_page_or_use_the_card(series_of, alice):
    _, plain = series_of(1)
    closed = CustomerFactory(partner=PartnerFactory(name="Closed", refill_cards_in_portal=False))
    from billing.models import PortalUser
    from tests.factories import UserFactory

    user = UserFactory(username="mallory")
    PortalUser.objects.create(user=user, customer=closed)
    client = Client(raise_request_exception=False)
    client.force_login(user)
    assert client.get("/portal/refill-card/").status_code == 404
    assert client.post("/portal/refill-card/", {"code": plain[0]}).status_code == 404
    assert RefillCard.objects.get().status == "active"


HOSTILE_SERIES = {
    "quantity": ["\x00", "0", "-1", "1e3", "9" * 40, "1.5", "NaN"],
    "code_prefix": ["\x00", "A\x00", "GOLD", "x" * 1000, "€"],
    "amount": ["\x00", "0", "-1", "NaN", "Infinity", "1e22", "1E+999999", "1.001", "9" * 40],
    "currency": ["\x00", "ZZZ", "usd"],
    "partner": ["\x00", "9" * 40, "-1", "999999"],
    "valid_until": ["\x00", "9999-99-99", "2000-01-01T00:00", "1e22", "x" * 1000],
    "note": ["\x00", "x" * 1000],
}


def test_hostile_values_in_generate_are_form_errors_and_create_nothing(staff, alice):
    good = {"quantity": "2", "code_prefix": "NW", "amount": "10", "currency": "USD",
            "partner": alice.partner.pk, "valid_until": "2031-01-01T00:00", "note": ""}  # fmt: skip
    wrong = []
    for field, values in HOSTILE_SERIES.items():
        for value in values:
            response = staff.post("/admin/refillcards/cardseries/add/", {**good, field: value})
            if response.status_code != 200 or "errorlist" not in response.content.decode():
                wrong.append(f"{field}={value[:20]!r}: {response.status_code}")
    assert wrong == []
    assert not CardSeries.objects.exists()
    assert staff.post("/admin/refillcards/cardseries/add/", good).status_code == 302
    assert RefillCard.objects.count() == 2


def test_hostile_customers_in_staff_redeem_are_form_errors(staff, series_of):
    series, _ = series_of(1)
    card = RefillCard.objects.get()
    url = f"/admin/refillcards/refillcard/{card.pk}/redeem/"
    for value in ["\x00", "A\x00", "x" * 1000, "", "nobody", "' OR 1=1 --"]:
        response = staff.post(url, {"customer": value})
        assert response.status_code == 200 and "errorlist" in response.content.decode(), value
    card.refresh_from_db()
    assert card.status == "active"


@pytest.mark.parametrize(
    "url",
    [
        "/admin/refillcards/refillcard/999999/redeem/",
        "/admin/refillcards/cardseries/999999/export/",
        "/admin/refillcards/cardseries/999999/delete/",
        "/admin/refillcards/refillcard/?series__id__exact=%00",
        "/admin/refillcards/refillcard/?series__id__exact=" + "9" * 40,
        "/admin/refillcards/refillcard/?q=" + "A" * 5000,
    ],
)
def test_forged_urls_are_4xx_not_500(staff, url):
    assert staff.get(url).status_code < 500


def test_unknown_export_format_is_404(staff, series_of):
    series, _ = series_of(1)
    response = staff.post(f"/admin/refillcards/cardseries/{series.pk}/export/", {"format": "xls"})
    assert response.status_code == 404


def test_edits_with_a_past_date_are_form_errors(staff, series_of):
    series, _ = series_of(1)
    card = RefillCard.objects.get()
    response = staff.post(f"/admin/refillcards/cardseries/{series.pk}/change/",
                          {"valid_until_0": "2001-01-01", "valid_until_1": "00:00", "note": ""})  # fmt: skip
    assert response.status_code == 200 and "in the future" in response.content.decode()
    response = staff.post(f"/admin/refillcards/refillcard/{card.pk}/change/",
                          {"valid_until_0": "2001-01-01", "valid_until_1": "00:00", "status": "active"})  # fmt: skip
    assert response.status_code == 200 and "in the future" in response.content.decode()
    response = staff.post(f"/admin/refillcards/refillcard/{card.pk}/change/",
                          {"valid_until_0": "2031-01-01", "valid_until_1": "00:00", "status": "used"})  # fmt: skip
    assert response.status_code == 200 and "errorlist" in response.content.decode()
    response = staff.post(f"/admin/refillcards/refillcard/{card.pk}/change/",
                          {"valid_until_0": "2031-01-01", "valid_until_1": "00:00", "status": "disabled"})  # fmt: skip
    assert response.status_code == 302
    card.refresh_from_db()
    assert card.status == "disabled" and card.valid_until.year == 2031


def test_series_edit_and_card_delete_through_the_admin(staff, series_of):
    series, _ = series_of(2)
    response = staff.post(f"/admin/refillcards/cardseries/{series.pk}/change/",
                          {"valid_until_0": "2032-02-02", "valid_until_1": "10:00", "note": "promo"})  # fmt: skip
    assert response.status_code == 302
    assert {c.valid_until.year for c in series.cards.all()} == {2032}
    card = series.cards.first()
    assert staff.get(f"/admin/refillcards/refillcard/{card.pk}/delete/").status_code == 200
    response = staff.post(f"/admin/refillcards/refillcard/{card.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert series.cards.count() == 1


def test_card_and_series_actions_confirm_then_act(staff, series_of, alice):
    from django.contrib.admin.models import LogEntry

    series, plain = series_of(3)
    from refillcards import services
    from tests.refillcards.conftest import STAFF

    services.redeem_card(code=plain[0], customer=alice, actor=STAFF, channel="staff")
    ids = [str(pk) for pk in series.cards.values_list("pk", flat=True)]
    url = "/admin/refillcards/refillcard/"
    ask = staff.post(url, {"action": "disable_cards", "_selected_action": ids})
    assert ask.status_code == 200 and "Disable these cards?" in ask.content.decode()
    done = staff.post(url, {"action": "disable_cards", "_selected_action": ids, "post": "yes"})
    assert done.status_code == 302
    assert sorted(series.cards.values_list("status", flat=True)) == ["disabled", "disabled", "used"]
    staff.post(url, {"action": "activate_cards", "_selected_action": ids, "post": "yes"})
    assert sorted(series.cards.values_list("status", flat=True)) == ["active", "active", "used"]
    staff.post(url, {"action": "delete_unused", "_selected_action": ids, "post": "yes"})
    assert list(series.cards.values_list("status", flat=True)) == ["used"]
    staff.post("/admin/refillcards/cardseries/", {"action": "disable_cards",
               "_selected_action": [str(series.pk)], "post": "yes"})  # fmt: skip
    assert LogEntry.objects.count() >= 5
    # delete refused (a card was used): the page offers disable instead
    page = staff.get(f"/admin/refillcards/cardseries/{series.pk}/delete/").content.decode()
    assert "cannot be deleted" in page and "disable" in page
    staff.post(f"/admin/refillcards/cardseries/{series.pk}/delete/", {"do": "delete"})
    assert series.cards.count() == 1


def test_full_codes_follow_each_request_not_the_last_one(staff, series_of):
    """The admin object is shared by all requests: a superuser's list view must not
    make the next clerk's list show full codes."""
    from django.contrib.auth.models import Permission

    series, plain = series_of(1)
    url = f"/admin/refillcards/refillcard/?series__id__exact={series.pk}"
    assert plain[0] in staff.get(url).content.decode()
    clerk = get_user_model().objects.create_user("clerk", password="pw", is_staff=True)
    clerk.user_permissions.set(Permission.objects.filter(codename="view_refillcard"))
    client = Client(raise_request_exception=False)
    client.force_login(clerk)
    assert staff.get(url).status_code == 200
    for page in (
        client.get(url),
        client.get(f"/admin/refillcards/refillcard/{series.cards.get().pk}/change/"),
    ):
        text = page.content.decode()
        assert page.status_code == 200 and plain[0] not in text and "NW-••••" in text
