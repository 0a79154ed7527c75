"""Prepares the Django project before it is served (run in a subprocess by the test fixture,
from tests/integration): ``python -m third_party.django_project.setup_db``.

migrate into PRONGHORN_TEST_DJANGO_DB, collectstatic into PRONGHORN_TEST_DJANGO_STATIC,
a superuser admin/admin-pass and one Product ("Pronghorn antelope")."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "third_party.django_project.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from third_party.django_project.shop.models import Product  # noqa: E402

USERNAME = "admin"
PASSWORD = "admin-pass"
PRODUCT = "Pronghorn antelope"

if __name__ == "__main__":
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    get_user_model().objects.create_superuser(USERNAME, "admin@example.com", PASSWORD)
    Product.objects.create(name=PRODUCT, price="12.50")
