from django.apps import AppConfig


class LoginsConfig(AppConfig):
    name = "config.logins"
    label = "logins"
    verbose_name = "Sign-in lockouts"
