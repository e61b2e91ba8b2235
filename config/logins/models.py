from axes.models import AccessAttempt


class FailedSignIn(AccessAttempt):
    """django-axes' attempt row, as staff see it in the admin: the failures of one
    account from one address and browser since their last cool-off."""

    class Meta:
        proxy = True
        verbose_name = "failed sign-in"
        verbose_name_plural = "failed sign-ins"
        ordering = ["-attempt_time"]

    def __str__(self) -> str:
        return f"{self.username or '(no username)'} from {self.ip_address or '(no address)'}"
