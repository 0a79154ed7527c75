"""ASGI entry point: third_party.django_project.asgi:application (run from tests/integration)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "third_party.django_project.settings")

application = get_asgi_application()
