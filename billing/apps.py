from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        # After a credit, subscriptions on hold for funds are looked at (a receiver that
        # may be lost: the billing job is the safety net).
        from billing.subscriptions import hooks  # noqa: F401
