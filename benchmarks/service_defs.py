"""The service the services benchmark submits (engines import it by reference)."""

from __future__ import annotations

from moi.services import Service


class BenchService(Service):
    name = "bench-python"

    def run(self) -> str:
        return "true"
