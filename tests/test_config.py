"""Settings from defaults, an INI file, the environment and configure(); a lazy import."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from moi.core.config import ContextSpec, build_settings
from moi.core.redact import masked_url
from moi.errors import ConfigError
from moi.storage import redis_clients
from moi.storage.redis_clients import parse_sentinel_url


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("MOI_REDIS_URL", "MOI_CONTEXTS", "MOI_DEFAULT_CONTEXT", "MOI_KEY_PREFIX", "MOI_TTL", "MOI_CONFIG_FP"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_use_the_embedded_runtime(clean_env) -> None:
    settings = build_settings()
    assert settings.uses_embedded_redis and settings.uses_embedded_cluster
    assert (settings.default_context, settings.key_prefix, settings.ttl) == ("default", "", 14 * 24 * 3600)


def test_ini_then_environment_then_overrides(clean_env, tmp_path) -> None:
    ini = tmp_path / "moi.ini"
    ini.write_text(
        "[redis]\nhost = 127.0.0.1\nport = 7000\npassword = s3cret\ndb = 2\n"
        "[ipython]\ncontext = demo, big=slurm:c1, local=/tmp/x/ipcontroller-client.json\ndefault = big\n"
        "[moi]\nkey_prefix = app:\nttl = 60\n"
    )
    clean_env.setenv("MOI_CONFIG_FP", str(ini))
    settings = build_settings()
    assert settings.redis_url == "redis://:s3cret@127.0.0.1:7000/2"
    assert settings.contexts == {
        "demo": ContextSpec("demo", profile="demo"),
        "big": ContextSpec("big", profile="slurm", cluster_id="c1"),
        "local": ContextSpec("local", url_file="/tmp/x/ipcontroller-client.json"),
    }
    assert (settings.default_context, settings.key_prefix, settings.ttl) == ("big", "app:", 60)

    clean_env.setenv("MOI_TTL", "90")
    clean_env.setenv("MOI_REDIS_URL", "redis://127.0.0.1:7001/0")
    assert build_settings().ttl == 90
    assert build_settings().redis_url == "redis://127.0.0.1:7001/0"
    assert build_settings({"ttl": 5}).ttl == 5


def test_a_list_of_sentinels_is_a_sentinel_url_that_names_them_all(clean_env, tmp_path) -> None:
    ini = tmp_path / "moi.ini"
    ini.write_text("[redis]\nsentinels = 10.0.0.5:26379, 10.0.0.6\nservice = jobs\npassword = s3cret\ndb = 1\n")
    clean_env.setenv("MOI_CONFIG_FP", str(ini))
    url = build_settings().redis_url
    assert url == "redis+sentinel://:s3cret@10.0.0.5:26379,10.0.0.6/jobs/1"
    target = parse_sentinel_url(url)
    assert (target.sentinels, target.service, target.db) == ([("10.0.0.5", 26379), ("10.0.0.6", 26379)], "jobs", 1)
    assert target.master_options == {"password": "s3cret"}
    assert masked_url(url) == "redis+sentinel://:***@10.0.0.5:26379,10.0.0.6/jobs/1"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://:pw@10.0.0.5:26379", "a sentinel URL names its sentinels and service"),
        ("redis+sentinel://10.0.0.5:port/jobs", "a sentinel's port is a number"),
        ("redis://10.0.0.5/0?ssl_ca_certs=/ca.pem", "ssl_* options need TLS: write rediss://"),
        ("pw@10.0.0.5:6379", "not a bare address"),
    ],
)
def test_a_redis_url_moi_cannot_use_is_a_config_error(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)) as raised:
        redis_clients.sync_client(url)
    assert "pw" not in str(raised.value)


def test_a_context_named_by_profile_knows_its_connection_file(clean_env, tmp_path) -> None:
    """What ``moi status`` and ``moi submit`` probe when no dispatcher has noted the cluster online."""
    clean_env.setenv("IPYTHONDIR", str(tmp_path))
    security = tmp_path / "profile_slurm" / "security"
    assert ContextSpec.parse("big=slurm:c1").connection_file() == str(security / "ipcontroller-c1-client.json")
    assert ContextSpec.parse("lab=slurm").connection_file() == str(security / "ipcontroller-client.json")
    assert ContextSpec.parse("x=/a/b.json").connection_file() == "/a/b.json"


def test_first_configured_context_is_the_default(clean_env) -> None:
    clean_env.setenv("MOI_CONTEXTS", "alpha,beta")
    assert build_settings().default_context == "alpha"


def test_bad_values_are_config_errors(clean_env) -> None:
    with pytest.raises(ConfigError, match="ttl must be a number"):
        build_settings({"ttl": "soon"})
    with pytest.raises(ConfigError, match="positive"):
        build_settings({"ttl": 0})


def test_time_limits_and_max_retries_from_the_ini_the_environment_and_configure(clean_env, tmp_path) -> None:
    for name in ("MOI_TIME_LIMIT", "MOI_CONTEXT_TIME_LIMITS", "MOI_MAX_RETRIES"):
        clean_env.delenv(name, raising=False)
    ini = tmp_path / "moi.ini"
    ini.write_text(
        "[ipython]\ncontext = default, big=slurm:c1\n[moi]\nmax_retries = 3\ntime_limit = 2h\n"
        "[context big]\ntime_limit = 12h\n"
    )
    clean_env.setenv("MOI_CONFIG_FP", str(ini))
    settings = build_settings()
    assert (settings.max_retries, settings.time_limit, settings.context_time_limits) == (3, 7200.0, {"big": 43200.0})
    assert (settings.time_limit_of("default"), settings.time_limit_of("big")) == (7200.0, 43200.0)
    clean_env.setenv("MOI_CONTEXT_TIME_LIMITS", "default=30m")
    clean_env.setenv("MOI_TIME_LIMIT", "")  # empty: not set here, so the file's holds
    assert build_settings().context_time_limits == {"default": 1800.0}
    assert build_settings({"time_limit": None}).time_limit_of("big") is None
    assert build_settings().max_retries == 3 and build_settings({"max_retries": "0"}).max_retries == 0


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"time_limit": "lots"}, "time_limit is refused: 'lots' is not a duration"),
        ({"time_limit": 0}, "time_limit is refused: 0 is not a duration above zero"),
        ({"time_limit": float("inf")}, "time_limit is refused: inf is not a duration above zero"),
        ({"max_retries": -1}, "max_retries must be a whole number from 0 to 1000, not -1"),
        ({"max_retries": "many"}, "max_retries must be a number, not 'many'"),
        ({"context_time_limits": "big=-5"}, "[context big] time_limit is refused"),
        ({"context_time_limits": "big"}, "context time limits are NAME=DURATION"),
        ({"context_time_limits": {"nowhere": "1h"}}, "[context nowhere] names no configured context"),
    ],
)
def test_a_bad_time_limit_or_max_retries_is_one_line(clean_env, given: dict[str, object], says: str) -> None:
    clean_env.setenv("MOI_CONTEXTS", "default, big=slurm:c1")
    with pytest.raises(ConfigError) as raised:
        build_settings(given)
    assert says in str(raised.value) and "\n" not in str(raised.value)


def test_a_context_section_takes_only_a_time_limit(clean_env, tmp_path) -> None:
    ini = tmp_path / "moi.ini"
    ini.write_text("[context default]\ntime_limit = 1h\nengines = 4\n")
    clean_env.setenv("MOI_CONFIG_FP", str(ini))
    with pytest.raises(ConfigError, match=re.escape("[context default] has no option 'engines'")):
        build_settings()


def test_import_opens_no_connection_and_starts_nothing(tmp_path) -> None:
    # An unreachable Redis and an empty state dir: importing and naming things must still work.
    code = "import moi, moi.job, moi.cli\nfrom moi import ctx_default, r_client\nprint(ctx_default)\n"
    env = {"PATH": "/usr/bin:/bin", "MOI_STATE_DIR": str(tmp_path / "state"), "MOI_REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "default\n"
    assert not (tmp_path / "state").exists()


def test_a_down_context_breaks_neither_import_nor_other_contexts(r, tmp_path, cluster_file) -> None:
    import moi
    from moi.job import get_info, submit
    from tests import jobs
    from tests.conftest import finished

    moi.configure(contexts=f"default={cluster_file},down={tmp_path / 'gone.json'}", cluster_timeout=1)
    try:
        waiting, _, _ = submit("down", "kim", "x", None, jobs.add, 1, 1)  # queued until 'down' is up
        job_id, _, _ = submit("default", "kim", "x", None, jobs.add, 1, 1)
        assert finished(job_id)["result"] == 2
        assert get_info(waiting)["status"] == "Queued" and "'down'" in get_info(waiting)["waiting"]
    finally:
        moi.storage.process._overrides.clear()
        moi.jobs.connections.reset()
