"""API tokens: shown once, kept as a hash, accepted as Bearer on the websocket and a job's files, revocable."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from moi.jobs import connections
from moi.storage import tokens
from tests.conftest import run_moi
from tests.test_file_routes import a_job_with_files, fetch
from tests.test_relay_security import frames_until, is_get_of, server


def created(*args: str) -> str:
    done = run_moi("token", "create", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_is_shown_once_and_only_its_hash_is_kept(r) -> None:
    token = created("--user", "alice", "--name", "laptop")
    assert token.startswith("moi_")
    secret = token.split("_", 2)[2]
    kept = r.hgetall("moi:tokens")
    assert len(kept) == 1 and all(secret not in value and token not in value for value in kept.values())
    token_id, fields = next(iter(kept.items()))
    assert json.loads(fields)["user"] == "alice"

    listed = run_moi("token", "list").stdout.splitlines()
    assert len(listed) == 1 and listed[0].split("\t")[:4] == [token_id, "alice", "user", "laptop"]
    assert secret not in listed[0]

    refused = run_moi("token", "revoke", "0123456789ab")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "No API token '0123456789ab'; `moi token list` shows them"
    with pytest.raises(Exception, match="not a user name|looks like|reserves"):
        tokens.create(connections.store(), "moi:admin")


def test_a_bearer_token_opens_the_socket_as_its_user_and_a_bad_or_revoked_one_gets_401(r) -> None:
    token = created("--user", "alice")
    alice_group = connections.store().ensure_group("alice")

    async def scenario() -> None:
        async with server() as port:
            url = f"ws://127.0.0.1:{port}/moi-ws/"
            socket = await websocket_connect(HTTPRequest(url, headers=bearer(token)))
            socket.write_message('{"get": []}')
            await frames_until(socket, is_get_of(alice_group))
            socket.close()
            for bad in (token[:-2] + "xx", "moi_0123456789ab_" + "a" * 43, "not-a-token"):
                with pytest.raises(HTTPClientError) as refused:
                    await websocket_connect(HTTPRequest(url, headers=bearer(bad)))
                assert refused.value.code == 401
            assert run_moi("token", "revoke", token).returncode == 0
            with pytest.raises(HTTPClientError) as revoked:
                await websocket_connect(HTTPRequest(url, headers=bearer(token)))
            assert revoked.value.code == 401

    asyncio.run(scenario())


def test_files_by_token_for_the_owner_and_an_admin_and_no_one_else(r, tmp_path: Path) -> None:
    job_id = a_job_with_files("alice", tmp_path)
    mine, someone, admin = created("--user", "alice"), created("--user", "bob"), created("--user", "ops", "--admin")

    async def scenario() -> None:
        async with server() as port:
            path = f"/moi-files/{job_id}/input/notes.txt"
            owner = await fetch(port, path, user=None, headers=bearer(mine))
            assert (owner.code, owner.body) == (200, b"0123456789")
            assert (await fetch(port, path, user=None, headers=bearer(someone))).code == 404
            assert (await fetch(port, path, user="bob", headers=bearer(mine))).code == 200  # the token decides
            assert (await fetch(port, path, user=None, headers=bearer(admin))).code == 200
            assert (await fetch(port, path, user="alice", headers=bearer("moi_bad"))).code == 401  # no fallback

    asyncio.run(scenario())
