"""pytest plugin (entry point ``pytest11: antiloop``): the ``emulator`` fixture.

::

    async def test_echo(emulator):
        ...  # emulator is a started antiloop.testing.Emulator

Options per test: ``@pytest.mark.antiloop_emulator(rate_limits=False, time_scale=0.001,
answer_window=15.0, webhook_timeout=60.0, clock=ManualClock())``.

Nothing is imported or started unless a test asks for the fixture, so sessions that do
not use it are unaffected; without pytest-asyncio the fixture is not defined.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from antiloop.testing.emulator import Emulator

MARKER = "antiloop_emulator"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**options): options of the `emulator` fixture, passed to "
        "antiloop.testing.Emulator (rate_limits, time_scale, answer_window, "
        "webhook_timeout, clock, faults)",
    )


def emulator_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The keyword arguments for ``Emulator`` from the closest ``antiloop_emulator`` mark."""
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        return {}
    if marker.args:
        raise pytest.UsageError(f"@pytest.mark.{MARKER} takes keyword arguments only")
    return dict(marker.kwargs)


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - pytest-asyncio is a dev dependency
    pytest_asyncio = None  # type: ignore[assignment]

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def emulator(request: pytest.FixtureRequest) -> AsyncIterator[Emulator]:
        """A started :class:`antiloop.testing.Emulator` on a free port of 127.0.0.1."""
        from antiloop.testing.emulator import Emulator

        async with Emulator(**emulator_options(request)) as tg:
            yield tg
