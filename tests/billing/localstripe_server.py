"""Run localstripe on loopback for the test suite.

Started by the ``localstripe`` fixture with the interpreter of ``.venv-localstripe``
(``.ci/localstripe.sh install``), never imported by the project: aiohttp and
localstripe live only in that virtualenv.

On top of plain localstripe it adds what the suite needs and localstripe lacks:

- It binds 127.0.0.1 on a free port itself and prints the port on stdout, so two
  pytest-xdist workers never race for a port.
- It keeps its store in memory only (localstripe pickles it to a fixed path in
  /tmp after every write, which two workers would share).
- Idempotency keys, as Stripe implements them: a POST with an ``Idempotency-Key``
  header that was already seen gets the first response again, without a second
  effect; the same key with different parameters is refused with 400.
- Fault injection for the tests of timeouts and 5xx answers:
  ``POST /_config/faults`` with JSON ``{"path": "/v1/payment_intents", "mode": ...,
  "count": 1}``, where ``mode`` is ``"error_before"`` (answer 500, do nothing),
  ``"error_after"`` (do the work, then answer 500) or ``"delay_after"`` (do the
  work, then answer only after ``delay`` seconds: a client timeout).
  ``GET /_config/requests`` lists the (method, path, idempotency key) seen.
"""

import asyncio
import hashlib
import json
import socket
import sys

from aiohttp import web
from localstripe.resources import Store
from localstripe.server import app

Store.dump_to_disk = lambda self: None  # memory only; see the module docstring

_responses: dict[tuple[str, str], tuple[str, int, bytes, str]] = {}
_faults: list[dict] = []
_requests: list[dict] = []


def _fault_for(request: web.Request) -> dict | None:
    for fault in _faults:
        if request.method == "POST" and request.path == fault["path"] and fault["count"] > 0:
            fault["count"] -= 1
            return fault
    return None


@web.middleware
async def idempotency_and_faults(request: web.Request, handler):
    if request.path.startswith("/_config/"):
        return await handler(request)
    key = request.headers.get("Idempotency-Key")
    _requests.append({"method": request.method, "path": request.path, "idempotency_key": key})
    fault = _fault_for(request)
    if fault and fault["mode"] == "error_before":
        return web.json_response(
            {"error": {"type": "api_error", "message": "Injected failure (before)"}}, status=500
        )

    cache_key = (request.headers.get("Authorization", ""), key or "")
    fingerprint = hashlib.sha256(request.path.encode() + await request.read()).hexdigest()
    if request.method == "POST" and key and cache_key in _responses:
        seen_fingerprint, status, body, content_type = _responses[cache_key]
        if seen_fingerprint != fingerprint:
            return web.json_response(
                {
                    "error": {
                        "type": "idempotency_error",
                        "message": "Keys for idempotent requests can only be used with the "
                        "same parameters they were first used with.",
                    }
                },
                status=400,
            )
        response = web.Response(status=status, body=body, content_type=content_type)
        response.headers["Idempotent-Replayed"] = "true"
        return response

    response = await handler(request)
    if request.method == "POST" and key and isinstance(response, web.Response):
        content_type = response.content_type or "application/json"
        _responses[cache_key] = (fingerprint, response.status, response.body, content_type)

    if fault and fault["mode"] == "error_after":
        return web.json_response(
            {"error": {"type": "api_error", "message": "Injected failure (after)"}}, status=500
        )
    if fault and fault["mode"] == "delay_after":
        await asyncio.sleep(float(fault.get("delay", 5)))
    return response


async def add_fault(request: web.Request) -> web.Response:
    fault = await request.json()
    fault.setdefault("count", 1)
    _faults.append(fault)
    return web.json_response({"ok": True})


async def clear_faults(request: web.Request) -> web.Response:
    _faults.clear()
    return web.json_response({"ok": True})


async def list_requests(request: web.Request) -> web.Response:
    return web.Response(text=json.dumps(_requests), content_type="application/json")


# Outermost, so it also sees (and replays) the errors localstripe turns into responses.
app.middlewares.insert(0, idempotency_and_faults)
app.router.add_post("/_config/faults", add_fault)
app.router.add_delete("/_config/faults", clear_faults)
app.router.add_get("/_config/requests", list_requests)


def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)  # noqa: T201  (the fixture reads the port)
    web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True)


if __name__ == "__main__":
    sys.exit(main())
