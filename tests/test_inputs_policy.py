"""Server paths and URIs are the operator's grant: the attacks of issue 29, point 1, for real.

A real moi server (tests/web.py) and two users' tokens; the session's Redis (its port is the SSRF
target), its password file, the cookie secret's path; a real HTTP server on 127.0.0.1 that the
configuration allows, which also redirects to the Redis port and trickles; a real TCP server
that answers something that is not HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import ipaddress
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from moi import services
from moi.core.info import Status
from moi.errors import ConfigError, InputRefused
from moi.job import submit
from moi.jobfiles import input_policy
from moi.jobs import connections
from tests import files_jobs, service_defs
from tests.conftest import REDIS_PASSWORD, finished
from tests.test_api import call, multipart, payload, token_for
from tests.test_relay_security import server

WAIT = 60  # seconds: a bound on a hang, never an assertion on time
FETCH_TIMEOUT = 2  # seconds a fetch may take here: the trickling server is cut off after it
MAX_BYTES = 100_000  # bytes a fetch may bring here
SERVED = b"served by the allowed test server"


class Allowed(http.server.BaseHTTPRequestHandler):
    """The test's own HTTP server: /data.txt, /redirect (to ``target``), /to-file (to file:///etc/passwd),
    /trickle (a byte now and then), /big (more than the size bound, with no length announced)."""

    target = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path in ("/redirect", "/to-file"):
            self.send_response(302)
            self.send_header("Location", self.target if self.path == "/redirect" else "file:///etc/passwd")
            self.end_headers()
        elif self.path == "/big":
            self.send_response(200)
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(b"y" * (2 * MAX_BYTES))
        elif self.path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.5)
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(SERVED)))
            self.end_headers()
            self.wfile.write(SERVED)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def http_server(target: str) -> Iterator[int]:
    handler = type("Handler", (Allowed,), {"target": target})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def not_http_server() -> Iterator[int]:
    """Answers every connection with a Redis-like error line: not HTTP, and a 'secret' in it."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                connection, _ = listener.accept()
                with connection:
                    connection.recv(1024)
                    connection.sendall(b"-ERR the secret is " + REDIS_PASSWORD.encode() + b"\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()


@contextlib.contextmanager
def settings(**values: str) -> Iterator[None]:
    """moi's settings with these MOI_* variables, for this process (the server's) and what it submits."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    connections.reset()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        connections.reset()


@pytest.fixture
def places(tmp_path: Path, session_dir: Path, redis_url: str) -> dict[str, Any]:
    root = tmp_path / "granted"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "data.txt").write_text("inside the root")
    (root / "to-passwd").symlink_to("/etc/passwd")
    (root / "to-redis-conf").symlink_to(session_dir / "redis" / "redis.conf")
    (tmp_path / "outside.txt").write_text("outside the root")
    return {"root": root, "redis_port": urlsplit(redis_url).port, "session": session_dir}


def one_line_refusal(answer: Any) -> str:
    """The answer's error text, after checking it is a 422 with one line that holds no secret."""
    assert answer.code == 422, answer.body
    text = payload(answer)["error"]
    assert "\n" not in text and "Traceback" not in text
    for secret in (REDIS_PASSWORD, "root:x:0:0", "inside the root", "outside the root"):
        assert secret not in text
    return str(text)


def test_web_inputs_are_uploads_uris_or_paths_inside_the_roots(r, places: dict[str, Any]) -> None:
    services.register(service_defs.Reads)
    root, redis_port, session = places["root"], places["redis_port"], places["session"]
    alice, bob = token_for("alice"), token_for("bob")

    async def scenario(http_port: int) -> None:
        async with server() as port:

            async def post(token: str, body: Any, headers: dict[str, str] | None = None) -> Any:
                return await call(port, "POST", "/api/v1/jobs", token, body, headers=headers or {})

            # Server paths: outside the roots, a missing one, through a link or '..': one refusal, word for word.
            paths = [
                "/etc/passwd",
                "/etc/no-such-file-here",
                str(session / "redis" / "redis.conf"),
                str(session / "state" / "cookie_secret"),
                str(root / "to-passwd"),
                str(root / "to-redis-conf"),
                f"{root}/../outside.txt",
                f"{root}/sub/../../outside.txt",
                str(root.parent / "outside.txt"),
                "relative/sub/data.txt",
            ]
            texts = set()
            for path in paths:
                text = one_line_refusal(await post(alice, {"service": "reads", "files": [path]}))
                texts.add(text.replace(repr(os.path.basename(path)), "NAME"))
            assert len(texts) == 1, texts
            os.mkfifo(root / "fifo")  # inside a root, but no file: refused at once, never a hang
            fifo = one_line_refusal(await post(alice, {"service": "reads", "files": [str(root / "fifo")]}))
            assert "not a regular file" in fifo

            # file: URIs outside the roots, the same way; other schemes and internal addresses too.
            uris = [
                "file:///etc/shadow",
                "file:///etc/no-such-file-here",
                f"file://{root}/to-passwd",
                f"file://{root}/../outside.txt",
                "file://localhost/etc/passwd",
                f"ftp://127.0.0.1:{http_port}/data.txt",
                f"gopher://127.0.0.1:{redis_port}/_INFO",
            ] + [
                f"http://{host}:{redis_port}/"
                for host in ("127.0.0.1", "127.0.0.2", "[::1]", "0x7f000001", "2130706433", "localhost", "0.0.0.0")
            ] + [f"http://127.0.0.2:{http_port}/data.txt", f"http://[::ffff:127.0.0.1]:{redis_port}/"]
            file_texts = set()
            for uri in uris:
                text = one_line_refusal(await post(alice, {"service": "reads", "files": [uri]}))
                assert "refused" in text, (uri, text)
                if uri.startswith("file:"):
                    file_texts.add(text.replace(repr(os.path.basename(uri)), "NAME"))
            assert len(file_texts) == 1, file_texts  # the same for /etc/shadow, a missing file, a link, '..'

            # Inputs that are not a list of text: one line each, never a 500.
            for files in (5, [5], {}, {"a": "/etc/passwd"}, "/etc/passwd", [None], [["/etc/passwd"]]):
                one_line_refusal(await post(alice, {"service": "reads", "files": files}))

            # What the operator grants still works: an upload, a path inside a root, a URI to an allowed server.
            body, headers = multipart({"service": "reads"}, {"up.txt": b"uploaded"})
            made = [await post(alice, body, headers)]
            made.append(await post(bob, {"service": "reads", "files": [str(root / "sub" / "data.txt")]}))
            made.append(await post(bob, {"service": "reads", "files": [f"file://{root}/sub/data.txt"]}))
            made.append(await post(alice, {"service": "reads", "files": [f"http://127.0.0.1:{http_port}/data.txt"]}))
            results = []
            for answer in made:
                assert answer.code == 201, answer.body
                results.append(finished(payload(answer)["id"], timeout=WAIT)["result"])
            assert results == [
                {"up.txt": "uploaded"},
                {"data.txt": "inside the root"},
                {"data.txt": "inside the root"},
                {"data.txt": SERVED.decode()},
            ]

    with http_server("") as http_port:
        grant = {"MOI_INPUT_ROOTS": str(root), "MOI_FETCH_ALLOW": f"127.0.0.1:{http_port}"}
        try:
            with settings(**grant):
                asyncio.run(scenario(http_port))
        finally:
            services.unregister("reads")


def test_a_fetch_is_checked_again_where_it_runs_and_fails_with_one_line(r, places: dict[str, Any]) -> None:
    """An allowed server that redirects to the Redis port, one that trickles, one that is not HTTP: each
    job fails alone with one line, and nothing of what answered reaches it."""
    services.register(service_defs.Reads)
    redis_port = places["redis_port"]
    alice = token_for("alice")

    async def scenario(http_port: int, raw_port: int) -> None:
        async with server() as port:
            cases = {
                f"http://127.0.0.1:{http_port}/redirect": "after a redirect, " + input_policy.INTERNAL,
                f"http://127.0.0.1:{http_port}/to-file": "after a redirect, file: URIs are not allowed here",
                f"http://127.0.0.1:{http_port}/big": f"it is over {MAX_BYTES} bytes ([files] fetch_max_bytes)",
                f"http://127.0.0.1:{http_port}/trickle": f"it took longer than {FETCH_TIMEOUT} s",
                f"http://127.0.0.1:{raw_port}/": "the server's answer is not HTTP",
            }
            made = {}
            for uri in cases:
                answer = await call(port, "POST", "/api/v1/jobs", alice, {"service": "reads", "files": [uri]})
                assert answer.code == 201, answer.body
                made[uri] = payload(answer)["id"]
            for uri, expected in cases.items():
                info = finished(made[uri], timeout=WAIT)
                assert info["status"] == Status.FAILED and info["result_format"] == "text", (uri, dict(info))
                assert expected in info["result"] and "\n" not in info["result"], info["result"]
                for secret in (REDIS_PASSWORD, "redis_version", "root:x"):
                    assert secret not in str(info)

    with http_server(f"http://127.0.0.1:{redis_port}/") as http_port, not_http_server() as raw_port:
        grant = {
            "MOI_FETCH_ALLOW": f"127.0.0.1:{http_port}, 127.0.0.1:{raw_port}",
            "MOI_FETCH_TIMEOUT": str(FETCH_TIMEOUT),
            "MOI_FETCH_MAX_BYTES": str(MAX_BYTES),
        }
        try:
            with settings(**grant):
                asyncio.run(scenario(http_port, raw_port))
        finally:
            services.unregister("reads")


def test_the_library_reads_its_users_paths_but_fetches_only_what_the_policy_allows(
    r, places: dict[str, Any], tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    _, _, handle = submit("default", "carol", "a path", None, files_jobs.read_inputs_and_resource, files=[outside])
    assert handle.get(timeout=WAIT) == {"outside.txt": "outside the root"}  # read as the user who names it
    for uri, advice in [
        (outside.as_uri(), "give a plain path instead"),
        (f"http://127.0.0.1:{places['redis_port']}/", "does not fetch from"),
        (f"http://localhost:{places['redis_port']}/", "does not fetch from"),
        ("ftp://127.0.0.1/x", "[files] uri_schemes"),
    ]:
        with pytest.raises(InputRefused) as refused:
            submit("default", "carol", "a uri", None, files_jobs.read_inputs_and_resource, files=[uri])
        assert advice in str(refused.value) and "\n" not in str(refused.value)


def test_moi_own_redis_and_cluster_are_refused_inside_an_allowed_network(redis_url: str, cluster_file: str) -> None:
    own = input_policy.own_endpoints(redis_url, [cluster_file])
    redis_port = urlsplit(redis_url).port
    controller_ports = [port for port in json.loads(Path(cluster_file).read_text()).values() if isinstance(port, int)]
    assert f"127.0.0.1:{redis_port}" in own and all(f"127.0.0.1:{port}" in own for port in controller_ports)
    loopback = ipaddress.ip_address("127.0.0.1")
    wide = input_policy.Policy(allow=("127.0.0.0/8",), internal=tuple(own))
    assert wide.reachable(loopback, 8080) and not wide.reachable(loopback, redis_port or 0)
    assert wide.uri_problem(f"http://127.0.0.1:{redis_port}/") == input_policy.INTERNAL
    granted = input_policy.Policy(allow=("127.0.0.0/8", f"127.0.0.1:{redis_port}"), internal=tuple(own))
    assert granted.reachable(loopback, redis_port or 0)  # only an entry with its port lets a fetch reach it


def test_every_scheme_names_a_host_that_is_checked_with_one_answer_for_missing_and_internal_names(
    r, places: dict[str, Any]
) -> None:
    """ftp, sftp and webdav allowed, their hosts are checked like http's; an IPv4 address hidden in
    6to4, Teredo or NAT64 is that address; a missing name is refused as an internal one is."""
    redis = places["redis_port"]
    internal = [
        f"ftp://127.0.0.1:{redis}/x",
        "sftp://localhost/x",
        "webdav://10.0.0.1/x",
        f"http://[2002:7f00:1::]:{redis}/",  # 6to4 of 127.0.0.1
        "http://[2002:a00:1::1]/",  # 6to4 of 10.0.0.1 (fsspec would split an ftp one at its "::")
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",  # Teredo, client 127.0.0.1
        "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
        "http://no-such-host.invalid/",
        "ftp://no-such-host.invalid/x",
    ]
    with settings(MOI_URI_SCHEMES="https, http, ftp, sftp, webdav"):
        for uri in internal + ["ftp://example.com/x::http://127.0.0.1/"]:
            with pytest.raises(InputRefused) as refused:
                submit("default", "carol", "a uri", None, files_jobs.read_inputs_and_resource, files=[uri])
            chained = "a chained URI (with '::') is not allowed; name one file"
            assert refused.value.why == (input_policy.INTERNAL if uri in internal else chained)
        assert input_policy.Policy(schemes=("s3",)).uri_problem("s3://a-bucket/key") is None  # a bucket, not a host


def test_a_web_users_server_path_is_read_once_so_the_checked_bytes_are_the_copied_bytes(
    r, places: dict[str, Any]
) -> None:
    """The validator swaps the file once it has checked it: the job still gets the checked bytes; a
    server path over [moi] max_upload is refused as an upload would be."""
    root = places["root"]
    checked, big = root / "sub" / "swap.txt", root / "sub" / "big.txt"
    checked.write_bytes(b"checked")
    big.write_bytes(b"b" * 101)
    services.register(service_defs.ReadsChecked)
    service_defs.SWAP_AFTER_CHECK[:] = [str(checked)]
    try:
        with settings(MOI_INPUT_ROOTS=str(root), MOI_MAX_UPLOAD="100"):
            job_id, _, _ = services.submit("reads-checked", "alice", files=[str(checked)], origin=input_policy.WEB)
            assert checked.read_bytes() == b"swapped"  # the swap was done, after the check
            assert finished(job_id, timeout=WAIT)["result"] == {"swap.txt": "checked"}
            service_defs.SWAP_AFTER_CHECK.clear()
            with pytest.raises(InputRefused) as refused:
                services.submit("reads-checked", "alice", files=[str(big)], origin=input_policy.WEB)
            assert refused.value.why == "it is over 100 bytes ([moi] max_upload)"
    finally:
        service_defs.SWAP_AFTER_CHECK.clear()
        services.unregister("reads-checked")


def test_the_files_section_is_read_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from moi.core.config import build_settings

    config = tmp_path / "moi.ini"
    config.write_text(
        "[files]\ninput_roots = /srv/data, /shared\nuri_schemes = https, s3\n"
        "fetch_allow = 10.1.2.0/24, 127.0.0.1:8080, [::1]:81\nfetch_max_bytes = 1000\nfetch_timeout = 9\n"
    )
    monkeypatch.setenv("MOI_CONFIG_FP", str(config))
    read = build_settings()
    policy = input_policy.of_settings(read)
    assert policy.roots == ("/srv/data", "/shared") and policy.schemes == ("https", "s3")
    assert (policy.max_bytes, policy.timeout) == (1000, 9.0)
    assert policy.reachable(ipaddress.ip_address("10.1.2.7"), 443)
    assert policy.reachable(ipaddress.ip_address("127.0.0.1"), 8080)
    assert not policy.reachable(ipaddress.ip_address("127.0.0.1"), 8081)
    assert policy.reachable(ipaddress.ip_address("::1"), 81)
    monkeypatch.setenv("MOI_STATE_DIR", str(tmp_path / "state"))
    bad_lines = ("fetch_allow = example.org", "input_roots = relative/dir", "fetch_timeout = inf", "colour = red")
    for bad in (*bad_lines, "input_roots = /", f"input_roots = {tmp_path}"):  # the state directory's parents
        config.write_text(f"[files]\n{bad}\n")
        with pytest.raises(ConfigError, match=r"\[files\]"):
            build_settings()
