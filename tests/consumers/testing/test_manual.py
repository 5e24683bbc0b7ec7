"""The manual's complete test file: the one the suite runs, and it passes on its own."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "consumers" / "testing.md"
EXAMPLE = Path(__file__).with_name("test_manual_example.py")
MARKER = "<!-- the same file as tests/consumers/testing/test_manual_example.py"


def shown_in_the_manual() -> str:
    """The code block that follows the marker on the page."""
    after = PAGE.read_text(encoding="utf-8").split(MARKER, 1)[1]
    return after.split("```python\n", 1)[1].split("```\n", 1)[0]


def test_the_manual_shows_the_file_the_suite_runs() -> None:
    assert shown_in_the_manual() == EXAMPLE.read_text(encoding="utf-8")


async def test_it_passes_with_plain_pytest_outside_this_repository(tmp_path: Path) -> None:
    """pytest-asyncio in its default (strict) mode, no conftest, the package as installed."""
    (tmp_path / "test_payroll_sync.py").write_text(shown_in_the_manual(), encoding="utf-8")
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        # Hypothesis, which this project's own tests use, only adds its start-up here.
        "-p",
        "no:hypothesispytest",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 50)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    assert "6 passed" in text
    assert f"rootdir: {tmp_path}" in text  # none of this repository's settings applied
