"""The usage and balance API (/api/v1/, mounted in config/api.py).

Authentication: `Authorization: Bearer <API key>`; keys are created in the admin
(API keys) and stored hashed. A key restricted to a partner sees only that
partner's customers (others answer 404 / "no customer").

Errors (every answer is JSON; the statuses of each endpoint are listed in its
OpenAPI `responses`, which a schemathesis run in `make test` holds to the truth):
401 `{"detail": "..."}` for a missing, unknown or revoked key; 422
`{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}` for bad input, one
entry per field: a wrong type, a number out of range or with more than 6 decimal
places, text with control characters (NUL included), an unknown field (refused,
never ignored), an unknown customer or product in a usage event, a forged
pagination cursor; 402 `{"detail": "insufficient funds: ..."}` when the wallet
cannot pay; 409 for an event id reused for another event; 404 for an unknown
customer (in the URL) or event. The body itself: 400 when it is not JSON, 413
when it is too large, 415 when it is not sent as `application/json`
(`config.api`). A batch answers 200 (when the batch itself is valid) with one
result per event, each with its own status: one bad event never stops the others.
An unexpected error is a JSON 500 without details (logged on our side).
"""

# One module per resource; importing it registers its routes on the router, in this
# order (the order of the OpenAPI document). Each route keeps the operation_id it had
# when the API was one module (billing_api_<view>): generated clients rely on them.
from billing.api import usage  # noqa: E402, F401  (routes register on import)

# isort: split
from billing.api import customers  # noqa: E402, F401
from billing.api.auth import api_key_of, router  # noqa: E402
from billing.api.responses import documented  # noqa: E402
from billing.api.schemas import ErrorOut  # noqa: E402

__all__ = ["ErrorOut", "api_key_of", "documented", "router"]  # what config.api mounts
