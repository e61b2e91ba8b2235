from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from billing.views import stripe_webhook
from config.api import api, not_found_urls

admin.site.site_header = "Prepaid back-office"
admin.site.site_title = "Prepaid back-office"
admin.site.index_title = "Operations"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="portal:dashboard", permanent=False)),
    # Balance & Credits actions (wallets.admin.limits), inside the admin's login
    path("admin/balance/", include("wallets.admin.limits", namespace="balance")),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    *not_found_urls,  # any other /api/ URL: a JSON 404
    path("portal/", include("portal.urls")),
    path("stripe/webhook/", stripe_webhook, name="stripe-webhook"),
]
