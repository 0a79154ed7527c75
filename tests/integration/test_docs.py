"""The option table in docs/options.md is generated from the parser's table."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_options_doc_is_current():
    generated = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_options_doc.py")], capture_output=True, text=True, check=True
    ).stdout
    assert (ROOT / "docs" / "options.md").read_text() == generated, (
        "docs/options.md is stale: run scripts/gen_options_doc.py > docs/options.md"
    )
