from tests.billing.conftest import api, api_key, calls, credit, price  # noqa: F401 - shared fixtures
