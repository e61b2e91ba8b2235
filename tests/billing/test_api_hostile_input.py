"""Hostile input to every endpoint under /api/v1/: never a 5xx, never a traceback,
nothing booked, and a 4xx whose body says which field is wrong.

Each case is sent as an outside client would send it (raw JSON text, raw URL
escapes), through the test client with `raise_request_exception=False`, so a 500
shows as a 500 and not as the exception behind it.
"""

import json
from decimal import Decimal
from urllib.parse import quote

import pytest
from django.test import Client

from billing.models import UsageEvent
from wallets.ledger_check import find_problems
from wallets.models import CreditGrant, LedgerTransaction, Wallet

pytestmark = pytest.mark.django_db

D = Decimal

# --- the table of hostile values --------------------------------------------------------

# Raw JSON fragments: what a client can put in place of one value of an event.
HOSTILE_JSON = {
    "huge 1e22": '"1e22"',
    "huge 1e22 as number": "1e22",
    "huge 1E+30": '"1E+30"',
    "huge 40 digits": '"' + "9" * 40 + '"',
    "huge number literal": "9" * 400,
    "number 1e400 (inf)": "1e400",
    "negative": '"-1"',
    "negative number": "-5",
    "minus zero": '"-0"',
    "zero": "0",
    "NaN string": '"NaN"',
    "sNaN": '"sNaN"',
    "Infinity string": '"Infinity"',
    "tiny exponent 1e-7": '"1e-7"',
    "tiny exponent 1E-999999": '"1E-999999"',
    "huge exponent 1E+999999": '"1E+999999"',
    "seven places": '"1.0000001"',
    "hex": '"0x10"',
    "underscores": '"1_000"',
    "empty string": '""',
    "spaces": '"   "',
    "NUL": '"\\u0000"',
    "NUL inside": '"a\\u0000b"',
    "lone high surrogate": '"\\ud800"',
    "lone low surrogate": '"x\\udfff"',
    "right-to-left override": '"\\u202e1"',
    "oversized string": '"' + "a" * 100_000 + '"',
    "true": "true",
    "null": "null",
    "list": "[1, 2]",
    "object": '{"a": 1}',
    "deep list": "[" * 50 + "]" * 50,
}

EVENT_FIELDS = ["event_id", "customer", "product", "quantity", "dimensions", "timestamp"]


def legitimate(field: str, raw: str) -> bool:
    """Whether `raw` is a fine value for `field` after all (it would book): any
    clean, printable string is a valid event id or dimension name/value, and an
    integer a valid dimension value; no dimensions and no timestamp mean none and now."""
    value = json.loads(raw)
    if field == "dimensions":
        return value is None or value == {"a": 1}
    if field == "timestamp":
        return value is None
    if field == "dimensions:value" and type(value) is int:
        return len(str(value)) <= 200
    if field in {"event_id", "dimensions:key", "dimensions:value"} and isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return bool(value.strip()) and value.isprintable() and len(value) <= 100
    return False


def good_event(customer: str, event_id: str = "good-1") -> dict:
    return {"event_id": event_id, "customer": customer, "product": "api-calls", "quantity": "2"}


def event_with(field: str, raw: str, customer: str) -> str:
    """A usage event (JSON text) with `raw` in place of `field`'s value."""
    marker = "__HOSTILE__"
    body = good_event(customer, event_id="hostile-1")
    if field == "dimensions:value":
        body["dimensions"] = {"region": marker}
    elif field == "dimensions:key":
        body["dimensions"] = {marker: "eu"}
    else:
        body[field] = marker
    text = json.dumps(body)
    return text.replace(json.dumps(marker), raw)


FIELDS = [*EVENT_FIELDS, "dimensions:value", "dimensions:key"]


def hostile_values(field: str) -> list[tuple[str, str]]:
    """(name, raw JSON) of every table value that must be refused in `field`."""
    return [
        (name, raw)
        for name, raw in HOSTILE_JSON.items()
        if not legitimate(field, raw) and (field != "dimensions:key" or raw.startswith('"'))
    ]


# Whole-body oddities: (description, content type, raw body).
HOSTILE_BODIES = [
    pytest.param("text/plain", "{}", id="wrong content type"),
    pytest.param("", "{}", id="no content type"),
    pytest.param("application/x-www-form-urlencoded", "event_id=1", id="form body"),
    pytest.param("application/json", "", id="empty body"),
    pytest.param("application/json", "{", id="truncated JSON"),
    pytest.param("application/json", "\x00", id="NUL body"),
    pytest.param("application/json", '"\\ud800"', id="surrogate body"),
    pytest.param("application/json", b"\xff\xfe{}", id="not UTF-8"),
    pytest.param("application/json", "[]", id="a list"),
    # Python's json reads these; they are not JSON, so the body is refused whole.
    pytest.param("application/json", '{"events": [{"quantity": NaN}]}', id="NaN literal"),
    pytest.param("application/json", '{"quantity": Infinity}', id="Infinity literal"),
    pytest.param("application/json", '{"quantity": -Infinity}', id="-Infinity literal"),
    pytest.param("application/json", '{"quantity": ' + "9" * 5000 + "}", id="5000 digits"),
    pytest.param("application/json", "null", id="null"),
    pytest.param("application/json", "[" * 100_000 + "]" * 100_000, id="deeply nested"),
    pytest.param(
        "application/json", '{"a":' * 5_000 + "1" + "}" * 5_000, id="deeply nested objects"
    ),
    pytest.param("application/json", '{"events": ' + "[" * 3_000_000 + "]}", id="3 MB body"),
]

# Path segments for an account number or an event id (already URL-escaped).
HOSTILE_PATH = {
    "%00": "%00",
    "a%00b": "a%00b",
    "surrogate %ED%A0%80": "%ED%A0%80",
    "not UTF-8 %FF": "%FF",
    "long": "A" * 3000,
    "huge number": "9" * 40,
    "negative": "-1",
    "exponent": "1e3",
    "dots": "..",
    "spaces": "%20%20",
    "unicode": quote("😀"),
    "forged id": "987654",
}

# Query parameters (name, raw URL-escaped value) for the list endpoints.
HOSTILE_QUERY = [
    ("currency", "%00"),
    ("currency", "US%00"),
    ("currency", "%ED%A0%80"),
    ("currency", "usd"),
    ("currency", "X" * 3000),
    ("status", "%00"),
    ("status", "nonsense"),
    ("page_size", "%00"),
    ("page_size", "-1"),
    ("page_size", "9" * 40),
    ("page_size", "1e3"),
    ("page_size", "NaN"),
    ("cursor", "%00"),
    ("cursor", "not-base64!"),
    ("cursor", "cD0lMDA="),  # p=%00
    ("cursor", "cD1hYmM="),  # p=abc
    ("cursor", "cD05OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5"),  # p=9999...9 (beyond bigint)
    ("cursor", "bz0tMQ=="),  # o=-1
    ("cursor", "bz05OTk5OTk5OQ=="),  # o=99999999
    ("cursor", "cj1tYXliZQ=="),  # r=maybe
    ("cursor", "cD0tMQ=="),  # p=-1
    ("cursor", "cD0xZTM="),  # p=1e3
    ("cursor", quote("😀")),
    ("unknown", "%00"),
]


# --- fixtures and helpers ----------------------------------------------------------------


@pytest.fixture
def client(api_key) -> Client:
    _key, token = api_key
    return Client(headers={"Authorization": f"Bearer {token}"}, raise_request_exception=False)


@pytest.fixture
def funded(alice, calls, price, credit):
    price(calls, "0.5")
    return credit(alice, "1000")


def ledger_state() -> tuple:
    return (
        LedgerTransaction.objects.count(),
        UsageEvent.objects.filter(status="booked").count(),
        [(w.pk, w.credit_balance, w.debt) for w in Wallet.objects.order_by("pk")],
        [(g.pk, g.remaining, g.status) for g in CreditGrant.objects.order_by("pk")],
    )


def assert_refused(response, *, field_error: bool = True) -> dict:
    """A 4xx with a JSON `detail`, no traceback; with `field_error`, `detail` lists
    the fields at fault (loc + msg)."""
    text = response.content.decode("utf-8", "replace")
    assert 400 <= response.status_code < 500, (response.status_code, text[:2000])
    assert "Traceback" not in text
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert "detail" in body, body
    if field_error:
        assert isinstance(body["detail"], list) and body["detail"], body
        for problem in body["detail"]:
            assert problem["loc"] and problem["msg"], problem
    return body


def send_json(client: Client, url: str, text: str | bytes, content_type="application/json"):
    return client.generic("POST", url, text, content_type=content_type)


# --- POST /usage and /usage/batch -----------------------------------------------------


@pytest.mark.parametrize("field", FIELDS)
def test_a_hostile_value_in_one_event_is_a_422_naming_the_field(client, alice, funded, field):
    before = ledger_state()
    wrong = []
    for name, raw in hostile_values(field):
        response = send_json(client, "/api/v1/usage", event_with(field, raw, alice.account_number))
        try:
            body = assert_refused(response)
            assert response.status_code == 422
            named = field.split(":")[0]
            assert any(named in problem["loc"] for problem in body["detail"]), body
        except AssertionError as exc:
            wrong.append(f"{name}: {str(exc).splitlines()[0][:300]}")
    assert wrong == []
    assert ledger_state() == before
    assert find_problems() == []


@pytest.mark.parametrize("field", FIELDS)
def test_in_a_batch_the_hostile_event_fails_alone_and_the_good_one_books(
    client, alice, funded, field
):
    wrong = []
    for number, (name, raw) in enumerate(hostile_values(field)):
        good = json.dumps(good_event(alice.account_number, event_id=f"good-{number}"))
        text = '{"events": [' + event_with(field, raw, alice.account_number) + ", " + good + "]}"
        booked_before = UsageEvent.objects.filter(status="booked").count()
        response = send_json(client, "/api/v1/usage/batch", text)
        try:
            assert response.status_code == 200, response.content[:300]
            body = response.json()
            assert (body["booked"], body["failed"]) == (1, 1), body
            bad, ok = body["results"]
            assert bad["ok"] is False and bad["status"] == 422 and bad["errors"], bad
            assert any(field.split(":")[0] in e["loc"] for e in bad["errors"]), bad
            assert ok["ok"] is True and ok["usage"]["amount"] == "1", ok
            assert UsageEvent.objects.filter(status="booked").count() == booked_before + 1
        except AssertionError as exc:
            wrong.append(f"{name}: {str(exc).splitlines()[0][:300]}")
    assert wrong == []
    booked = UsageEvent.objects.filter(status="booked").count()
    funded.refresh_from_db()
    assert funded.remaining == D("1000") - booked
    assert find_problems() == []


@pytest.mark.parametrize("where", ["event", "batch"])
@pytest.mark.parametrize("extra", ['"currency": "EUR"', '"amount": "0"', '"customer_id": 1'])
def test_an_unknown_field_is_refused_not_ignored(client, alice, funded, where, extra):
    before = ledger_state()
    event = json.dumps(good_event(alice.account_number))
    if where == "event":
        response = send_json(client, "/api/v1/usage", event[:-1] + ", " + extra + "}")
    else:
        response = send_json(
            client, "/api/v1/usage/batch", '{"events": [' + event + "], " + extra + "}"
        )

    body = assert_refused(response)
    assert response.status_code == 422
    assert body["detail"][0]["loc"][-1] == extra.split('"')[1]
    assert body["detail"][0]["msg"] == "Extra inputs are not permitted"
    assert ledger_state() == before


def test_an_unknown_field_inside_a_batch_event_fails_that_event_only(client, alice, funded):
    bad = {**good_event(alice.account_number, "bad-1"), "currency": "EUR"}
    good = good_event(alice.account_number)

    body = send_json(client, "/api/v1/usage/batch", json.dumps({"events": [bad, good]})).json()

    assert (body["booked"], body["failed"]) == (1, 1)
    assert body["results"][0]["errors"][0]["loc"] == ["currency"]


@pytest.mark.parametrize("url", ["/api/v1/usage", "/api/v1/usage/batch"])
def test_a_hostile_body_is_refused(client, alice, funded, url):
    before = ledger_state()
    wrong = []
    for case in HOSTILE_BODIES:
        content_type, text = case.values
        response = send_json(client, url, text, content_type=content_type)
        try:
            assert_refused(response, field_error=False)
        except AssertionError as exc:
            wrong.append(f"{case.id}: {str(exc).splitlines()[0][:300]}")
    assert wrong == []
    assert ledger_state() == before


@pytest.mark.parametrize(
    "content_type", ["text/plain", "", "application/xml", "multipart/form-data"]
)
def test_valid_json_with_a_wrong_content_type_is_415(client, alice, funded, content_type):
    body = json.dumps(good_event(alice.account_number))

    response = send_json(client, "/api/v1/usage", body, content_type=content_type)

    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]
    assert not UsageEvent.objects.exists()


def test_json_with_a_charset_is_accepted(client, alice, funded):
    body = json.dumps(good_event(alice.account_number))

    response = send_json(client, "/api/v1/usage", body, "application/json; charset=utf-8")

    assert response.status_code == 200


def test_a_body_over_the_limit_is_413(client, alice, funded):
    response = send_json(client, "/api/v1/usage/batch", " " * (3 * 1024 * 1024) + "{}")

    assert response.status_code == 413
    assert "at most 2,621,440 bytes" in response.json()["detail"]


# --- paths and queries ------------------------------------------------------------------------

GET_PATHS = ["/api/v1/customers/{}/balance", "/api/v1/customers/{}/grants",
             "/api/v1/customers/{}/transactions"]  # fmt: skip


@pytest.mark.parametrize("template", GET_PATHS)
def test_a_hostile_account_number_in_the_path_is_a_4xx(client, funded, template):
    wrong = []
    for name, segment in HOSTILE_PATH.items():
        response = client.get(template.format(segment))
        try:
            assert_refused(response, field_error=False)
        except AssertionError as exc:
            wrong.append(f"{name}: {str(exc).splitlines()[0][:300]}")
    assert wrong == []


def test_a_nul_in_the_path_is_a_422_naming_it(client, funded):
    response = client.get("/api/v1/customers/A%00/balance")

    body = assert_refused(response)
    assert body["detail"][0]["loc"] == ["path", "account_number"]


def test_a_hostile_event_id_in_the_reverse_path_is_a_4xx(client, funded):
    before = ledger_state()
    wrong = []
    for name, segment in HOSTILE_PATH.items():
        response = client.post(f"/api/v1/usage/{segment}/reverse")
        try:
            assert_refused(response, field_error=False)
        except AssertionError as exc:
            wrong.append(f"{name}: {str(exc).splitlines()[0][:300]}")
    assert wrong == []
    assert ledger_state() == before


QUERY_PARAMETERS = {
    "balance": {"currency"},
    "grants": {"currency", "status", "page_size", "cursor"},
    "transactions": {"currency", "page_size", "cursor"},
}


@pytest.mark.parametrize("template", GET_PATHS)
def test_a_hostile_query_parameter_is_a_422_naming_it(client, alice, funded, template):
    endpoint = template.rsplit("/", 1)[1]
    wrong = []
    for name, value in HOSTILE_QUERY:
        response = client.get(template.format(alice.account_number) + f"?{name}={value}")
        try:
            if name not in QUERY_PARAMETERS[endpoint]:  # not this endpoint's: ignored
                assert response.status_code == 200
                continue
            body = assert_refused(response)
            assert response.status_code == 422
            assert body["detail"][0]["loc"][-1] == name, body
        except AssertionError as exc:
            wrong.append(f"{name}={value[:20]}: {str(exc).splitlines()[0][:300]}")
    assert wrong == []


def test_a_forged_cursor_is_a_422_naming_the_cursor(client, alice, funded):
    response = client.get(f"/api/v1/customers/{alice.account_number}/grants?cursor=cD1hYmM=")

    body = assert_refused(response)
    assert body["detail"][0]["loc"] == ["query", "cursor"]


def test_the_cursors_the_api_gives_out_still_work(client, alice, funded, credit):
    for number in range(3):
        credit(alice, "1", name=f"Extra {number}")
    url = f"/api/v1/customers/{alice.account_number}/grants?page_size=2"

    first = client.get(url).json()
    second = client.get(first["next"]).json()
    back = client.get(second["previous"]).json()

    assert len(first["results"]) == 2 and len(second["results"]) == 2
    assert {g["id"] for g in first["results"]}.isdisjoint(g["id"] for g in second["results"])
    assert back["results"] == first["results"]


def test_an_unknown_api_url_is_a_json_404(client):
    response = client.get("/api/v1/nothing/here")

    assert response.status_code == 404
    assert response.json() == {"detail": "No such API endpoint; see /api/v1/docs."}


# --- no tracebacks, ever --------------------------------------------------------------------


def test_an_unexpected_error_is_a_json_500_without_a_traceback_even_with_debug(
    client, alice, funded, settings, monkeypatch, caplog
):
    from billing.api import customers as customer_endpoints
    from config.api import INTERNAL_ERROR

    settings.DEBUG = True

    def broken(request, account_number):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(customer_endpoints, "visible_customer", broken)

    response = client.get(f"/api/v1/customers/{alice.account_number}/balance")

    assert response.status_code == 500
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response.json() == {"detail": INTERNAL_ERROR}
    assert b"secret internals" not in response.content
    assert b"Traceback" not in response.content
    assert "secret internals" in caplog.text  # logged on our side, with the traceback
    assert "Traceback" in caplog.text


@pytest.mark.parametrize(
    "header",
    ["Bearer ppk_\x00", "Bearer \x00", "Bearer " + "ppk_" + "x" * 5000, "Bearer ppk_é",
     "\x00", "Basic YTpi", "Bearer"],
)  # fmt: skip
def test_a_hostile_api_key_is_a_json_401(alice, funded, header):
    client = Client(headers={"Authorization": header}, raise_request_exception=False)

    response = client.get(f"/api/v1/customers/{alice.account_number}/balance")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response.json()["detail"]


@pytest.mark.parametrize("body", ['{"quantity": "1"}', "[]", "x", " " * (3 * 1024 * 1024) + "1"])
def test_reversing_takes_no_body_and_refuses_one(client, alice, funded, body):
    booked = send_json(client, "/api/v1/usage", json.dumps(good_event(alice.account_number)))
    before = ledger_state()

    response = send_json(client, f"/api/v1/usage/{booked.json()['id']}/reverse", body)

    assert_refused(response, field_error=len(body) < 100)
    assert response.status_code == (422 if len(body) < 100 else 413)
    assert ledger_state() == before
    assert client.post(f"/api/v1/usage/{booked.json()['id']}/reverse").status_code == 200
