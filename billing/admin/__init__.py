"""The billing admin, one module per concept. Admin modules are the top layer: they
call any service. `kit` holds the helpers every app's admin uses."""

from billing.admin import api_keys, catalogue, customers, stripe, usage  # noqa: F401  (register)
