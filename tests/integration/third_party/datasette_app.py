"""datasette serving one small sqlite database, for test_third_party_protocols.py.

PRONGHORN_TEST_DATASETTE_DB names the database file (made by the test: a table "animals").
The ASGI app is Datasette(...).app(), what `datasette serve` hands to uvicorn.
"""

from __future__ import annotations

import os

from datasette.app import Datasette

DB = os.environ["PRONGHORN_TEST_DATASETTE_DB"]

app = Datasette([DB], settings={"num_sql_threads": 1}).app()
