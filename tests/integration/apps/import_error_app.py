"""Importing this module fails."""

import this_module_does_not_exist_pronghorn_test  # noqa: F401

app = None
