"""The embedded cluster's task scheduler setting (chosen by measurement; see README, Performance)."""

from __future__ import annotations

import pytest

from moi.core.config import Settings, build_settings, scheduler_args
from moi.errors import ConfigError


def test_default_is_leastload_and_an_override_reaches_the_controller(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().scheduler == "leastload"
    assert scheduler_args("leastload") == ["--TaskScheduler.scheme_name=leastload"]
    monkeypatch.setenv("MOI_SCHEDULER", "leastload+hwm=0")
    assert scheduler_args(build_settings().scheduler) == [
        "--TaskScheduler.scheme_name=leastload",
        "--TaskScheduler.hwm=0",
    ]


@pytest.mark.parametrize("wrong", ["fast", "pure+hwm=", "lru+hwm=two", ""])
def test_an_unknown_scheduler_is_a_config_error(monkeypatch: pytest.MonkeyPatch, wrong: str) -> None:
    with pytest.raises(ConfigError, match="scheduler must be one of"):
        build_settings({"scheduler": wrong})
