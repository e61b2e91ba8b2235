from django.apps import AppConfig


class InvoicesConfig(AppConfig):
    name = "invoices"
    verbose_name = "Invoices and payments"

    def ready(self) -> None:
        from invoices.ledger_check import register

        register()
