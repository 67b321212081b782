"""A Redis master, its replica and a Redis Sentinel watching them, on 127.0.0.1, for one test.

``with SentinelSet(directory, password) as redis_set:`` gives ``url`` (a ``redis+sentinel://``
URL for moi), ``kill_master()`` and ``wait_for_failover()``. Every server asks for the
password; the sentinel needs none of its own.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from moi.storage.redis_server import free_port, quoted_value, redis_server_binary

SERVICE = "mymaster"


class SentinelSet:
    def __init__(self, directory: Path, password: str) -> None:
        self.directory = directory
        self.password = password
        self.ports = {"master": free_port(), "replica": free_port(), "sentinel": free_port()}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.url = f"redis+sentinel://:{password}@127.0.0.1:{self.ports['sentinel']}/{SERVICE}/0"

    def __enter__(self) -> SentinelSet:
        try:
            self._start("master", [])
            self._start("replica", [f"replicaof 127.0.0.1 {self.ports['master']}"])
            self._start_sentinel()
            self._until(lambda: self._replica_in_sync(), "the replica in sync with the master")
            self._until(lambda: self.master_port() == self.ports["master"], "the sentinel watching the master")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)

    def client(self, role: str) -> redis.Redis[Any]:
        return redis.Redis(port=self.ports[role], password=self.password, decode_responses=True, socket_timeout=5)

    def master_port(self) -> int | None:
        """The master's port, as the sentinel names it now."""
        sentinel = redis.Redis(port=self.ports["sentinel"], decode_responses=True, socket_timeout=5)
        try:
            address = sentinel.execute_command("SENTINEL", "get-master-addr-by-name", SERVICE)
        finally:
            sentinel.close()
        return int(address[1]) if address else None

    def kill_master(self) -> None:
        """SIGKILL the master once its replica holds all it wrote: the failover loses no acknowledged write."""
        self._until(self._replica_in_sync, "the replica in sync with the master")
        self.procs["master"].send_signal(signal.SIGKILL)
        self.procs["master"].wait(10)

    def wait_for_failover(self, timeout: float = 60) -> None:
        self._until(lambda: self.master_port() == self.ports["replica"], "the sentinel promoting the replica", timeout)

    # the parts --------------------------------------------------------------------

    def _config(self, name: str, lines: list[str]) -> Path:
        directory = self.directory / name
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = directory / f"{name}.conf"
        common = [
            "bind 127.0.0.1",
            f"port {self.ports[name]}",
            f"dir {quoted_value(str(directory))}",
            f"logfile {quoted_value(str(directory / f'{name}.log'))}",
        ]
        path.write_text("\n".join([*common, *lines]) + "\n")
        path.chmod(0o600)
        return path

    def _start(self, name: str, lines: list[str]) -> None:
        auth = [f"requirepass {quoted_value(self.password)}", f"masterauth {quoted_value(self.password)}", 'save ""']
        config = self._config(name, [*auth, *lines])
        self.procs[name] = subprocess.Popen([redis_server_binary(), str(config)], stdin=subprocess.DEVNULL)
        self._until(lambda: self._answers(name), f"the {name} answering")

    def _start_sentinel(self) -> None:
        config = self._config(
            "sentinel",
            [
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.ports['master']} 1",
                f"sentinel auth-pass {SERVICE} {quoted_value(self.password)}",
                f"sentinel down-after-milliseconds {SERVICE} 1000",
                f"sentinel failover-timeout {SERVICE} 10000",
            ],
        )
        self.procs["sentinel"] = subprocess.Popen(
            [redis_server_binary(), str(config), "--sentinel"], stdin=subprocess.DEVNULL
        )

    def _answers(self, name: str) -> bool:
        client = self.client(name)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _replica_in_sync(self) -> bool:
        master = self.client("master")
        try:
            info = master.info("replication")
        except redis.RedisError:
            return False
        finally:
            master.close()
        replica = info.get("slave0")
        return isinstance(replica, dict) and replica.get("offset") == info["master_repl_offset"]

    def _until(self, check: Any, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"not within {timeout:g}s: {what}; see {self.directory}")
            time.sleep(0.1)
