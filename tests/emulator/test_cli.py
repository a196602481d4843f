"""`antiloop emulator` as a real process: prints its URL, serves, stops on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import aiohttp
import pytest

from antiloop.testing import Emulator

RUN = "from antiloop.testing.emulator import main; raise SystemExit(main(sys.argv[1:]))"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_process_serves_until_a_signal(sig: signal.Signals) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        f"import sys; {RUN}",
        "--port",
        "0",
        "--no-rate-limit",
        "--time-scale",
        "0.5",
        "--answer-window",
        "20",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        match = re.fullmatch(r"antiloop emulator listening on (http://127\.0\.0\.1:(\d+))\n", line)
        assert match, line
        base_url = match.group(1)
        token = Emulator.token_for(77)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base_url}/bot{token}/getMe") as response:
                body = await response.json()
            assert body["ok"] is True and body["result"]["id"] == 77
            async with http.post(
                f"{base_url}/_emulator/send", json={"bot_id": 77, "user_id": 5, "text": "hi"}
            ) as response:
                assert response.status == 200
            for i in range(10):  # --no-rate-limit: no 429
                async with http.post(
                    f"{base_url}/bot{token}/sendMessage", data={"chat_id": "5", "text": str(i)}
                ) as response:
                    assert response.status == 200
        process.send_signal(sig)
        rc = await asyncio.wait_for(process.wait(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert rc == 0
    assert process.stdout is not None and process.stderr is not None
    assert await process.stdout.read() == b""  # exactly one line
    assert (await process.stderr.read()).decode().strip() == ""


async def test_bad_arguments_exit_non_zero() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        f"import sys; {RUN}",
        "--time-scale",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 2
    assert b"--time-scale must be positive" in stderr
