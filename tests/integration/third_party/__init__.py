"""Real third-party ASGI apps (Django, sse-starlette, Litestar, Quart) served by pronghorn
and by uvicorn side by side in test_third_party.py. Importable from tests/integration
as ``third_party.xxx``, like ``apps.xxx``."""
