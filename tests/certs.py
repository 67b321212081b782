"""A certificate authority and a server certificate made for one run, with the ``openssl`` command."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from moi.storage.redis_server import SYSTEM_BIN, TlsFiles

DAYS = "2"  # long enough for any run; nothing outlives the run's temporary directory anyway
KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def make_tls_files(directory: Path, addresses: list[str]) -> TlsFiles:
    """A CA, and a certificate it signed for a server reached at ``addresses`` (IP addresses)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, request = directory / "server.crt", directory / "server.key", directory / "server.csr"
    names = directory / "server.ext"
    names.write_text("subjectAltName=" + ",".join(f"IP:{address}" for address in addresses) + "\n")
    _openssl("req", "-x509", *KEY, "-keyout", ca_key, "-out", ca, "-days", DAYS, "-subj", "/CN=moi test CA")
    _openssl("req", *KEY, "-keyout", key, "-out", request, "-subj", "/CN=moi test redis")
    _openssl(
        "x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", cert, "-days", DAYS, "-extfile", names,
    )  # fmt: skip
    return TlsFiles(cert=cert, key=key, ca=ca)


def _openssl(*argv: str | Path) -> None:
    subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True)


def reason_no_tls_redis() -> str | None:
    """None when a redis-server built with TLS is here (Debian's, installed when missing); else why not."""
    if shutil.which("redis-server", path=SYSTEM_BIN) is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "redis-server"], capture_output=True, check=False)
    if shutil.which("redis-server", path=SYSTEM_BIN) is None:
        return "the TLS tests need a redis-server built with TLS: apt-get install -y redis-server"
    if shutil.which("openssl") is None:
        return "the TLS tests need openssl to make their certificates: apt-get install -y openssl"
    return None
