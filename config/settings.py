"""Settings, read from the environment (django-environ) with safe laptop defaults.

Production sets at least SECRET_KEY, DATABASE_URL, REDIS_URL, ALLOWED_HOSTS.
Without DATABASE_URL/REDIS_URL the app points at the private servers that
`config.devservers` runs under var/ (`make run` starts them).
"""

import base64
import hashlib
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from config.devservers import DEFAULT_DIR, database_url, redis_url

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
# Django's technical 500 page (traceback, settings) for pages; off even under DEBUG
SHOW_TRACEBACKS = env.bool("SHOW_TRACEBACKS", default=False)
SECRET_KEY = env("SECRET_KEY", default="dev-only-insecure-key-set-SECRET_KEY-in-production")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SITE_URL = env("SITE_URL", default="http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "djmoney",
    "django_filters",
    "django_celery_beat",
    "jobs",
    "billing",
    "wallets",
    "invoices",
    "refillcards",
    "portal",
    "axes",
    "config.logins",
]

MIDDLEWARE = [
    # an unexpected error in a page: the plain 500 page, never a traceback (even with DEBUG)
    "config.middleware.PlainServerError",
    # first: drops connections whose server restarted; a database outage in a page
    # answers 503 "temporarily unavailable" (the API has its own JSON 503)
    "config.outage.DatabaseOutageMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.RefuseNulInUrl",
    "config.middleware.RefuseForgedAdminSelection",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a sign-in that django-axes refused into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.refill.portal_menu",
            ],
        },
    },
]

# --- Database: PostgreSQL only -------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=database_url(DEFAULT_DIR / "pgdata")),
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
# No health check (a `SELECT 1` round trip) at the start of every request: a
# connection whose server went away (a PostgreSQL restart) is found without a round
# trip instead (config.outage: one poll() on its socket before each request and
# task), so it costs no failed request. bench/README.md measures both.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("CONN_HEALTH_CHECKS", default=False)
# While the database is down, requests answer 503 with this Retry-After (seconds).
OUTAGE_RETRY_AFTER_SECONDS = env.int("OUTAGE_RETRY_AFTER_SECONDS", default=2)
DATABASES["default"].setdefault("TEST", {})
# Django disables psycopg's prepared statements (prepare_threshold=None). Allow them,
# but only where code asks (`prepare=True`): the draw-down statement is planned once
# per connection instead of on every call. Nothing is prepared automatically.
DATABASES["default"].setdefault("OPTIONS", {}).setdefault("prepare_threshold", 1_000_000_000)
# ...and let PostgreSQL keep one generic plan for them. By default it re-plans a
# prepared statement whose custom plan looks cheaper, and with `= ANY(array)`
# parameters it always does: the usage lookup (billing.usage.rating.LOOKUP_SQL) spent
# 0.6 ms planning per request for 0.1 ms executing. This touches only what is
# prepared (the usage lookup, the draw-down call, the usage event insert) and
# PL/pgSQL functions' statements; Django's own queries are not prepared.
DATABASES["default"]["OPTIONS"].setdefault(
    "options", f"-c plan_cache_mode={env('PG_PLAN_CACHE_MODE', default='force_generic_plan')}"
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: Celery broker and the shared cache (rate limits, lockouts) ---------
REDIS_URL = env("REDIS_URL", default=redis_url(DEFAULT_DIR / "redis.sock"))


def _kombu_url(url: str) -> str:
    """Kombu spells a unix-socket Redis URL as redis+socket://."""
    if url.startswith("unix://"):
        path, _, query = url.removeprefix("unix://").partition("?")
        db = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("db", "0")
        return f"redis+socket://{path}?virtual_host={db}"
    return url


CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="prepaid"),
    }
}

CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=_kombu_url(REDIS_URL))
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Longer than any task may run: a task not acked within it is redelivered.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", 3 * 3600)
}
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", 3600)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 60
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# django-celery-beat's DatabaseScheduler that sends only while it holds an advisory
# lock: a second beat stands by instead of sending every task twice (jobs/beat.py).
CELERY_BEAT_SCHEDULER = "jobs.beat:LeaderDatabaseScheduler"
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The expiry sweep (wallets.tasks.expire_grants) splits the due grants by wallet into
# this many partitions and sweeps them at once, each on its own database connection
# (so a worker running it holds this many connections more). 1: one loop on the
# worker's own connection.
EXPIRY_SWEEP_CONNECTIONS = env.int("EXPIRY_SWEEP_CONNECTIONS", default=2)

# --- Auth ----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:dashboard"
LOGOUT_REDIRECT_URL = "portal:login"

# --- Sign-in lockout (django-axes; config/logins/) -------------------------------------
# LOGIN_FAILURE_LIMIT failed sign-ins in a row lock the account (from every address)
# and the client address (for every account) until LOGIN_LOCKOUT_MINUTES after the
# last failure, on the portal's and the admin's sign-in pages. Failures are rows in
# PostgreSQL (axes' database handler): staff see and clear them in the admin. The
# API (bearer keys) does not sign in with a password and is not counted.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked sign-in
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env.bool("LOGIN_LOCKOUT_ENABLED", default=True)
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15))
if AXES_FAILURE_LIMIT < 1 or AXES_COOLOFF_TIME < timedelta(minutes=1):
    raise ImproperlyConfigured("LOGIN_FAILURE_LIMIT and LOGIN_LOCKOUT_MINUTES must be at least 1")
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# A lock lasts its cool-off from the last failure that counted: tries while locked
# neither extend it (the time on the page stays true) nor write a row. A success does
# not reset the count (it would let anyone with an account reset their address's).
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = False
AXES_DISABLE_ACCESS_LOG = True  # no row per successful sign-in
AXES_ENABLE_ADMIN = False  # config.logins.admin shows the lockouts instead
AXES_HTTP_RESPONSE_CODE = 429
AXES_LOCKOUT_CALLABLE = "config.logins.lockout.lockout_response"
AXES_CLIENT_IP_CALLABLE = "config.logins.lockout.client_ip"
AXES_USERNAME_CALLABLE = "config.logins.lockout.attempted_username"
# Proxies in front of the app that each append the address they saw to
# X-Forwarded-For (1 for one nginx or load balancer). 0: the client is REMOTE_ADDR
# and X-Forwarded-For is ignored (anyone can write it).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

# --- Locale and time -----------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# --- Money ---------------------------------------------------------------------
CURRENCIES = tuple(env.list("CURRENCIES", default=["USD", "EUR", "GBP"]))
DEFAULT_CURRENCY = env("DEFAULT_CURRENCY", default=CURRENCIES[0])

# --- Usage API -----------------------------------------------------------------
# An event may be stamped at most this far in the future (clock skew between the
# sender and us); later ones are refused with a 422.
USAGE_FUTURE_TOLERANCE_SECONDS = env.int("USAGE_FUTURE_TOLERANCE_SECONDS", default=300)
# … and at most this old (late records are normal for a few days; a year-old
# timestamp is a broken sender clock). Late usage lands on the next usage invoice.
USAGE_MAX_AGE_DAYS = env.int("USAGE_MAX_AGE_DAYS", default=90)
# Largest batch POST /api/v1/usage/batch accepts.
USAGE_BATCH_MAX_EVENTS = env.int("USAGE_BATCH_MAX_EVENTS", default=1000)

# --- Static files (WhiteNoise) -------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG and env.bool("STATIC_MANIFEST", default=True)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Email ---------------------------------------------------------------------
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
if env("EMAIL_URL", default=""):
    vars().update(env.email_url("EMAIL_URL"))
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="billing@localhost")
# The seller on invoice and receipt PDFs.
INVOICE_SELLER_NAME = env("INVOICE_SELLER_NAME", default="Prepaid Back-office Ltd")
INVOICE_SELLER_ADDRESS = env("INVOICE_SELLER_ADDRESS", default="1 Example Street, London")

# --- HTTPS and cookies (on by default unless DEBUG; off for plain-http tests) ---
HTTPS = env.bool("HTTPS", default=not DEBUG)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS and env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS and env.bool("SECURE_HSTS_PRELOAD", default=True)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# --- Stripe (optional: without a key "charge now" is simply not offered) -------
STRIPE_API_KEY = env("STRIPE_API_KEY", default="")
STRIPE_WEBHOOK_SECRET = env("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_API_BASE = env("STRIPE_API_BASE", default="")
# Seconds to wait for one answer, and how often the library itself retries a timeout
# or a 5xx (always with the same idempotency key).
STRIPE_TIMEOUT = env.float("STRIPE_TIMEOUT", default=30.0)
STRIPE_MAX_NETWORK_RETRIES = env.int("STRIPE_MAX_NETWORK_RETRIES", default=2)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # django-axes says INFO on every start and sign-in; its warnings (failures,
        # lockouts) stay.
        "axes": {"level": "WARNING"},
    },
}

# --- Refill cards (refillcards/) -------------------------------------------------
# Codes are stored as an HMAC (lookup) and Fernet-encrypted (export), never in plain
# text (refillcards/codes.py). Production sets both; the defaults are derived from
# SECRET_KEY so a laptop works. REFILL_CARD_LOOKUP_KEY cannot change once cards exist
# (their lookup hashes would no longer match); for the encryption keys, put a new key
# first and keep the old ones after it: the first encrypts, every one decrypts.
REFILL_CARD_LOOKUP_KEY = env(
    "REFILL_CARD_LOOKUP_KEY",
    default=hashlib.sha256(b"refill-card-lookup:" + SECRET_KEY.encode()).hexdigest(),
)
REFILL_CARD_ENCRYPTION_KEYS = env.list(
    "REFILL_CARD_ENCRYPTION_KEYS",
    default=[
        base64.urlsafe_b64encode(
            hashlib.sha256(b"refill-card-encryption:" + SECRET_KEY.encode()).digest()
        ).decode()
    ],
)
# A series of at most this many cards is generated at once; a larger one by a Celery
# task in batches of REFILL_CARD_BATCH (each batch one COPY, one transaction).
REFILL_CARD_SYNC_LIMIT = env.int("REFILL_CARD_SYNC_LIMIT", default=1000)
REFILL_CARD_BATCH = env.int("REFILL_CARD_BATCH", default=5000)
REFILL_CARD_MAX_SERIES = env.int("REFILL_CARD_MAX_SERIES", default=1_000_000)
# Failed redemptions (portal and API), counted in Redis: this many failures within
# the window lock the customer, and this many per minute lock the client address,
# for REFILL_CARD_LOCKOUT_MINUTES. The client address follows TRUSTED_PROXY_COUNT.
REFILL_CARD_CUSTOMER_FAILURES = env.int("REFILL_CARD_CUSTOMER_FAILURES", default=5)
REFILL_CARD_CUSTOMER_WINDOW_MINUTES = env.int("REFILL_CARD_CUSTOMER_WINDOW_MINUTES", default=15)
REFILL_CARD_ADDRESS_FAILURES_PER_MINUTE = env.int(
    "REFILL_CARD_ADDRESS_FAILURES_PER_MINUTE", default=20
)
REFILL_CARD_LOCKOUT_MINUTES = env.int("REFILL_CARD_LOCKOUT_MINUTES", default=15)
# The counters' key namespace in the cache (tests give each test its own).
REFILL_CARD_CACHE_NAMESPACE = env("REFILL_CARD_CACHE_NAMESPACE", default="refill")
