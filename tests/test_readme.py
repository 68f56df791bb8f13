"""The README's quickstart runs as written, on both cores."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart_code() -> str:
    assert README.is_file(), "README.md is missing"
    text = README.read_text(encoding="utf-8")
    heading = re.search(r"^#+\s*Quick\s*start.*$", text, re.IGNORECASE | re.MULTILINE)
    assert heading, "README.md has no Quickstart heading"
    block = re.search(r"^```python\n(.*?)^```", text[heading.end() :], re.DOTALL | re.MULTILINE)
    assert block, "README.md has no ```python block under its Quickstart heading"
    return block.group(1)


def test_readme_quickstart_runs(python_in: Any) -> None:
    result = python_in(quickstart_code())
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
