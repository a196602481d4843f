"""The pytest plugin, run in fresh pytest processes: the `emulator` fixture, its marker,
the example in docs/testing.md, and sessions that do not use it."""

from __future__ import annotations

import asyncio
import re
import sys
import textwrap
from pathlib import Path

import pytest

from antiloop.testing import Emulator, ManualClock

DOCS = Path(__file__).resolve().parents[2] / "docs" / "testing.md"


def doc_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    (example,) = [b for b in blocks if "async def test_" in b]
    return example


async def run_pytest(directory: Path, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *args,
        cwd=directory,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_the_documented_example_passes(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    (tmp_path / "test_tea_bot.py").write_text(doc_example())
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert 1 + 1 == 2\n")
    rc, out = await run_pytest(tmp_path, "-W", "error::pytest.PytestUnraisableExceptionWarning")
    assert rc == 0, out
    assert "2 passed" in out, out


async def test_a_failing_bot_fails_the_documented_test(tmp_path: Path) -> None:
    """The example can fail: a bot that answers the wrong thing is caught."""
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    broken = doc_example().replace('f"You chose {query.data}."', 'f"You chose {query.data}!"')
    broken = broken.replace("emulator.wait_for(", "emulator.wait_for(within=0.5, predicate=")
    (tmp_path / "test_tea_bot.py").write_text(broken)
    rc, out = await run_pytest(tmp_path)
    assert rc == 1, out
    assert "1 failed" in out and "TimeoutError" in out, out


async def test_strict_mode_and_sessions_without_the_fixture(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = strict\n")
    (tmp_path / "test_strict.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.asyncio
            @pytest.mark.antiloop_emulator(rate_limits=False)
            async def test_fixture_in_strict_mode(emulator):
                assert emulator.base_url.startswith("http://127.0.0.1:")

            def test_no_fixture():
                pass
            """
        )
    )
    rc, out = await run_pytest(tmp_path, "--strict-markers")
    assert rc == 0 and "2 passed" in out, out
    rc, out = await run_pytest(tmp_path, "-p", "no:asyncio", "-k", "no_fixture")
    assert rc == 0 and "1 passed" in out, out


@pytest.mark.antiloop_emulator(rate_limits=False, answer_window=3.0, clock=ManualClock(100.0))
async def test_the_marker_configures_the_fixture(emulator: Emulator) -> None:
    assert emulator.answer_window == 3.0
    assert emulator.clock() == 100.0
    await emulator.send(1, 2, "hi")
    assert emulator.messages(2)[0]["date"] == 100
