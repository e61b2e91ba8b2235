"""Partners, customer classes, customers and their portal users."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import connection, models
from django.urls import reverse

from billing import thresholds


def currency_choices() -> list[tuple[str, str]]:
    return [(code, code) for code in settings.CURRENCIES]


class Partner(models.Model):
    """A reseller or brand; refill-card series and portal settings hang off it."""

    name = models.CharField(max_length=200, unique=True)
    refill_cards_in_portal = models.BooleanField(
        "refill cards enabled in portal",
        default=True,
        help_text="Customers of this partner may redeem refill cards in the portal.",
    )
    top_up_in_portal = models.BooleanField(
        "card top-up enabled in portal",
        default=True,
        help_text="Customers of this partner may top up by card (Stripe) in the portal.",
    )
    transfers_in_portal = models.BooleanField(
        "transfers enabled in portal",
        default=True,
        help_text="Show the balance transfer page in the portal (transfer rules still apply).",
    )
    support_email = models.EmailField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class CustomerClass(models.Model):
    """A group of customers sharing policy (PortaBilling's customer class)."""

    name = models.CharField(max_length=200, unique=True)
    transfers_allowed = models.BooleanField(
        "subscriber-to-subscriber transfers allowed",
        default=False,
        help_text="Customers whose transfer policy is 'As defined by the customer class' follow this.",
    )
    max_temporary_increase_amount = models.DecimalField(
        "maximum temporary credit-limit increase (amount)",
        max_digits=18,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Empty: the global default applies.",
    )
    max_temporary_increase_days = models.PositiveIntegerField(
        "maximum temporary credit-limit duration (days)",
        null=True,
        blank=True,
        help_text="Empty: the global default applies.",
    )
    low_funds_thresholds = models.CharField(
        "default low funds warning thresholds",
        max_length=200,
        blank=True,
        validators=[thresholds.validate_amounts],
        help_text="Comma-separated amounts, e.g. 50, 20, 5: used for the class's customers "
        "whose own list is empty.",
    )
    credit_limit_warnings = models.CharField(
        "default credit limit warning thresholds",
        max_length=200,
        blank=True,
        validators=[thresholds.validate_percents],
        help_text="Comma-separated percentages, e.g. 80%, 90%, 100%: used for the class's "
        "customers whose own list is empty.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "customer classes"

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        # The wallets get the new defaults from an explicit service call by whoever
        # changed the class (`wallets.services.copy_class_warning_thresholds`).
        thresholds.normalise(self)
        super().save(*args, **kwargs)

    @property
    def max_temporary_increase_duration(self) -> timedelta | None:
        days = self.max_temporary_increase_days
        return timedelta(days=days) if days is not None else None


ACCOUNT_NUMBER_SEQUENCE = "billing_customer_account_number_seq"


def next_account_number() -> str:
    """Account numbers come from a PostgreSQL sequence: unique without a retry loop."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(%s)", [ACCOUNT_NUMBER_SEQUENCE])
        (value,) = cursor.fetchone()
    return f"A{value:07d}"


class Customer(models.Model):
    class BalanceModel(models.TextChoices):
        PREPAID = "prepaid", "Prepaid (debit)"
        POSTPAID = "postpaid", "Postpaid (credit)"

    class TransferPolicy(models.TextChoices):
        INHERIT = "inherit", "As defined by the customer class"
        YES = "yes", "Yes"
        NO = "no", "No"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        CLOSED = "closed", "Closed"

    account_number = models.CharField(
        max_length=32,
        unique=True,
        blank=True,
        validators=[RegexValidator(r"^[A-Za-z0-9_-]+$", "Use letters, digits, '-' or '_' only.")],
        help_text="Leave empty to number the account automatically.",
    )
    name = models.CharField(max_length=200)
    email = models.EmailField(blank=True)
    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="customers")
    customer_class = models.ForeignKey(
        CustomerClass,
        on_delete=models.PROTECT,
        related_name="customers",
        null=True,
        blank=True,
    )
    balance_model = models.CharField(
        max_length=10, choices=BalanceModel.choices, default=BalanceModel.PREPAID
    )
    currency = models.CharField(max_length=3, choices=currency_choices)
    billing_anchor_day = models.PositiveSmallIntegerField(
        "billing period anchor day",
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(28)],
        help_text="Day of the month a billing period starts (1–28).",
    )
    stripe_customer_id = models.CharField(max_length=255, blank=True)
    transfer_policy = models.CharField(
        "subscriber-to-subscriber transfers allowed",
        max_length=10,
        choices=TransferPolicy.choices,
        default=TransferPolicy.INHERIT,
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    low_funds_thresholds = models.CharField(
        "low funds warning thresholds",
        max_length=200,
        blank=True,
        validators=[thresholds.validate_amounts],
        help_text="Comma-separated amounts in the customer's currency, e.g. 50, 20, 5: "
        "the customer is emailed each time the available funds fall below one of them. "
        "Empty: the customer class's default.",
    )
    credit_limit_warnings = models.CharField(
        "credit limit warning thresholds",
        max_length=200,
        blank=True,
        validators=[thresholds.validate_percents],
        help_text="Comma-separated percentages of the credit limit, e.g. 80%, 90%, 100%: "
        "the customer is emailed each time the share of the limit in use reaches one. "
        "Empty: the customer class's default.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account_number"]
        indexes = [models.Index(fields=["name"]), models.Index(fields=["email"])]

    def __str__(self) -> str:
        return f"{self.account_number} {self.name}"

    def save(self, *args, **kwargs) -> None:
        if not self.account_number:
            self.account_number = next_account_number()
        # "50, 20, 5" / "80%, 90%"; the wallets get them from an explicit service
        # call by whoever changed the customer (`wallets.services.copy_warning_thresholds`).
        thresholds.normalise(self)
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return reverse("admin:billing_customer_change", args=[self.pk])

    def transfers_allowed(self) -> bool:
        """PortaBilling's rule: the customer's own Yes/No wins, else the class decides."""
        if self.transfer_policy == self.TransferPolicy.YES:
            return True
        if self.transfer_policy == self.TransferPolicy.NO:
            return False
        return bool(self.customer_class and self.customer_class.transfers_allowed)


class PortalUser(models.Model):
    """A login that may act for one customer in the self-service portal."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="portal_access"
    )
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="portal_users")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "portal user"

    def __str__(self) -> str:
        return f"{self.user} → {self.customer}"
