from django.contrib.auth import views as auth_views
from django.urls import path

from portal import balance_views, refill, subscriptions, topup_views, views

app_name = "portal"

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="portal/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.dashboard, name="dashboard"),
    path("transactions/", views.transactions, name="transactions"),
    path("alerts/", views.alerts, name="alerts"),
    path("documents/", views.documents, name="documents"),
    path("documents/<int:pk>/pdf/", views.document_pdf, name="document_pdf"),
    path("refill-card/", refill.refill_card, name="refill_card"),
    path("documents/top-ups/", topup_views.top_up_invoices, name="top_up_invoices"),
    path(
        "documents/top-ups/<int:pk>/pay/",
        topup_views.pay_top_up_invoice,
        name="pay_top_up_invoice",
    ),
    path("documents/payments/", topup_views.payments, name="payments"),
    path(
        "documents/payments/<int:pk>/receipt/",
        topup_views.payment_receipt,
        name="payment_receipt",
    ),
    path("subscriptions/", subscriptions.subscriptions, name="subscriptions"),
    path("credit-limit/", balance_views.credit_limit, name="credit_limit"),
    path("transfer/", balance_views.transfer, name="transfer"),
]
