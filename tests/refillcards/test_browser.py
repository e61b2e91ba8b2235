"""The Splynx seed's flows in real Chromium (Debian's) against a live server:
staff generate → cards table → redeem for a customer → Used → the customer's
transactions → export CSV and PDF; a customer redeems in the portal and sees the
balance and the payment in Documents; lockout; a partner without the switch has no
page."""

import csv
import io
import shutil
import subprocess
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from refillcards import codes
from refillcards.models import CardExport, RefillCard
from tests.factories import PartnerFactory, customer_with_login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sign_in_admin(page, live_server):
    get_user_model().objects.create_superuser("root", "root@example.com", "pw-for-tests")
    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-for-tests")
    page.click("input[type=submit]")


def test_staff_generate_redeem_and_export(live_server, page, alice, artifacts_dir, tmp_path):
    sign_in_admin(page, live_server)
    page.goto(f"{live_server.url}/admin/refillcards/cardseries/")
    page.click("text=Generate cards")
    page.fill("#id_quantity", "12")
    page.fill("#id_code_prefix", "nw")
    page.fill("#id_amount", "25")
    page.select_option("#id_currency", "USD")
    page.select_option("#id_partner", label=alice.partner.name)
    page.fill("#id_valid_until", "2031-06-30T12:00")
    page.screenshot(path=f"{artifacts_dir}/refill-generate.png", full_page=True)
    page.click("#rc-form input[type=submit]")

    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(12)
    expect(page.locator(".messagelist")).to_contain_text("Generated 12 cards")
    first = rows.first
    expect(first).to_contain_text("Active")
    expect(first.locator(".rc-code")).to_contain_text("NW-")  # the superuser sees full codes
    page.screenshot(path=f"{artifacts_dir}/refill-cards.png", full_page=True)

    first.get_by_role("link", name="Redeem", exact=True).click()
    page.fill("#id_customer", alice.account_number)
    page.click("#rc-form input[type=submit]")
    expect(page.locator(".messagelist")).to_contain_text("25.00 USD added")
    card = RefillCard.objects.get(number=1)
    row = page.locator("#result_list tbody tr", has_text=card.serial)
    expect(row).to_contain_text("Used")
    expect(row).to_contain_text(alice.name)
    page.screenshot(path=f"{artifacts_dir}/refill-cards-used.png", full_page=True)

    # the customer's transactions (Billing → Transactions)
    page.goto(f"{live_server.url}/admin/wallets/ledgertransaction/?q={alice.account_number}")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list")).to_contain_text(card.serial)

    # export: CSV (12 cards + header) and PDF (pages with the codes)
    page.goto(f"{live_server.url}/admin/refillcards/refillcard/?series__id__exact={card.series_id}")
    page.get_by_role("link", name="Export", exact=True).click()
    page.screenshot(path=f"{artifacts_dir}/refill-export.png", full_page=True)
    with page.expect_download() as download:
        page.click("button[value=csv]")
    lines = list(csv.reader(io.StringIO(open(download.value.path()).read())))
    assert lines[0] == ["serial", "code", "value", "currency", "valid_until", "status"]
    assert len(lines) == 13
    assert {line[5] for line in lines[1:]} == {"active", "used"}
    for line in lines[1:]:
        stored = RefillCard.objects.get(serial=line[0])
        assert stored.code_hash == codes.lookup_hash(codes.normalise(line[1]))
    with page.expect_download() as download:
        page.click("button[value=pdf]")
    pdf = tmp_path / "series.pdf"
    shutil.copy(download.value.path(), pdf)
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    assert all(line[1] in text for line in lines[1:])
    assert "25.00 USD" in text and "Valid until 30 Jun 2031" in text
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", str(pdf), f"{artifacts_dir}/refill-pdf"], check=True
    )
    assert text.count("\f") == 2  # 12 cards, ten a page
    assert list(CardExport.objects.values_list("format", flat=True).order_by("id")) == [
        "csv",
        "pdf",
    ]


def test_staff_without_the_permission_see_masked_codes_and_cannot_export(
    live_server, page, alice, series_of
):
    series, plain = series_of(2)
    from django.contrib.auth.models import Permission

    clerk = get_user_model().objects.create_user("clerk", password="pw-for-tests", is_staff=True)
    clerk.user_permissions.set(Permission.objects.filter(content_type__app_label="refillcards",
                                                         codename__in=["view_refillcard", "view_cardseries"]))  # fmt: skip
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "clerk")
    page.fill("#id_password", "pw-for-tests")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/refillcards/refillcard/?series__id__exact={series.pk}")
    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    body = page.inner_text("#result_list")
    assert "NW-••••" in body and not any(code in body for code in plain)
    response = page.goto(f"{live_server.url}/admin/refillcards/cardseries/{series.pk}/export/")
    assert response.status == 403


def test_customer_redeems_in_the_portal(live_server, page, alice, series_of, artifacts_dir):
    _, plain = series_of(3, amount="15")
    page.goto(f"{live_server.url}/portal/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "s3cret-pass")
    page.click("button[type=submit]")
    page.click("nav >> text=Refill card")
    page.fill("#id_code", plain[0].lower().replace("-", " "))
    page.click("#refill-form button")
    expect(page.locator(".messages")).to_contain_text("15.00 USD added")
    expect(page.locator(".messages")).to_contain_text("available funds are now 15.00 USD")
    page.screenshot(path=f"{artifacts_dir}/portal-refill-redeemed.png", full_page=True)
    page.click("nav >> text=Dashboard")
    expect(page.locator("#available-USD")).to_have_text("15.00")
    page.click("nav >> text=Documents")
    page.click("main >> text=Payments")
    payments = page.locator("main")
    card = RefillCard.objects.get(number=1)
    expect(payments).to_contain_text("15.00 USD")
    expect(payments).to_contain_text(f"Refill card {card.serial}")
    expect(payments).to_contain_text(f"#{card.payment_id}")
    expect(payments).to_contain_text("Refill card")
    page.screenshot(path=f"{artifacts_dir}/portal-documents-payment.png", full_page=True)

    # six wrong codes: locked out, and then the right code is refused too
    page.click("nav >> text=Refill card")
    for _n in range(6):
        page.fill("#id_code", codes.display(codes.new_code("NW"), "NW"))
        page.click("#refill-form button")
    expect(page.locator(".errorlist")).to_contain_text("paused")
    page.fill("#id_code", plain[1])
    page.click("#refill-form button")
    expect(page.locator(".errorlist")).to_contain_text("paused")
    page.screenshot(path=f"{artifacts_dir}/portal-refill-locked.png", full_page=True)
    assert RefillCard.objects.get(number=2).status == "active"
    assert alice.wallets.get().credit_balance == Decimal("15")


def test_partner_without_the_switch_has_no_refill_card_page(live_server, page):
    customer_with_login("dora", partner=PartnerFactory(name="Closed", refill_cards_in_portal=False))
    page.goto(f"{live_server.url}/portal/")
    page.fill("#id_username", "dora")
    page.fill("#id_password", "s3cret-pass")
    page.click("button[type=submit]")
    expect(page.locator("nav")).not_to_contain_text("Refill card")
    response = page.goto(f"{live_server.url}/portal/refill-card/")
    assert response.status == 404
