from tests.billing.conftest import calls, credit, price  # noqa: F401 - shared fixtures
