"""The image's health check: GET http://127.0.0.1:$PORT$HEALTH_PATH answers below 500 (exit 0).

Standard library only; used by HEALTHCHECK in deploy/Dockerfile and by the tests."""

import os
import sys
import urllib.error
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}{os.environ.get('HEALTH_PATH', '/')}"
try:
    with urllib.request.urlopen(url, timeout=3) as response:
        status = response.status
except urllib.error.HTTPError as exc:
    status = exc.code
except OSError as exc:
    print(f"unhealthy: {exc}", file=sys.stderr)
    sys.exit(1)
sys.exit(0 if status < 500 else 1)
