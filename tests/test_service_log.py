"""A service job's log, followed live over a real websocket of a real server; only by its owner."""

from __future__ import annotations

import asyncio
from pathlib import Path

from moi import files, services
from moi.core.info import Status
from tests import service_defs
from tests.conftest import finished
from tests.test_queue import wait_status
from tests.test_relay_security import connect, frames_until, is_get_of, server


def test_the_page_follows_a_jobs_log_as_lines_are_appended_and_no_one_else_can(r) -> None:
    services.register(service_defs.Chatty)
    try:
        job_id, group_id, _ = services.submit("chatty", "logger", {})
        wait_status(job_id, Status.RUNNING)

        async def scenario() -> list[str]:
            async with server() as port:
                stranger = await connect(port, "stranger")
                stranger.write_message(f'{{"log": "{job_id}"}}')
                refused = await frames_until(stranger, lambda frame: "error" in frame)
                assert job_id in refused[-1]["error"] and "log" not in refused[-1]

                owner = await connect(port, "logger")
                owner.write_message('{"get": []}')
                await frames_until(owner, is_get_of(group_id))
                owner.write_message(f'{{"log": "{job_id}"}}')
                lines: list[str] = []

                def has(text: str):  # noqa: ANN202
                    def seen(frame: dict) -> bool:
                        lines.extend(frame.get("log", {}).get("lines", []))
                        return any(text in line for line in lines)

                    return seen

                await frames_until(owner, has("line 2"))
                (Path(files.current_directory(job_id)) / "go").write_text("")
                await frames_until(owner, has("last"))
                ended = await frames_until(owner, lambda frame: frame.get("log", {}).get("end") is True)
                assert ended[-1]["log"]["id"] == job_id
                return lines

        lines = asyncio.run(scenario())
        assert [line.split()[-2:] for line in lines] == [["line", "0"], ["line", "1"], ["line", "2"], ["INFO", "last"]]
        assert finished(job_id)["status"] == Status.SUCCESS
    finally:
        services.unregister("chatty")


def test_a_socket_follows_at_most_four_logs_at_once(r) -> None:
    services.register(service_defs.Chatty)
    try:
        ids = [services.submit("chatty", "reader", {})[0] for _ in range(5)]

        async def scenario() -> None:
            async with server() as port:
                owner = await connect(port, "reader")
                owner.write_message('{"get": []}')
                await frames_until(owner, lambda frame: "get" in frame)
                for job_id in ids:
                    owner.write_message(f'{{"log": "{job_id}"}}')
                refused = await frames_until(owner, lambda frame: "error" in frame)
                assert refused[-1]["error"] == "at most 4 logs are followed at once; stop one first"
                owner.write_message(f'{{"log": {{"id": "{ids[0]}", "stop": true}}}}')
                owner.write_message(f'{{"log": "{ids[4]}"}}')  # room again: taken
                owner.write_message(f'{{"log": "{ids[0]}"}}')  # and full again
                refused = await frames_until(owner, lambda frame: "error" in frame)
                assert refused[-1]["error"].startswith("at most 4 logs")

        asyncio.run(scenario())
    finally:
        for job_id in ids:  # let them end
            wait_status(job_id, Status.RUNNING)
            (Path(files.current_directory(job_id)) / "go").write_text("")
        for job_id in ids:
            finished(job_id)
        services.unregister("chatty")
