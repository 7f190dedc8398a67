"""Helpers of tests/system/test_tls.py: a throwaway CA and server certificate made with
``openssl``, and a private TLS-only ``redis-server`` and a private RabbitMQ node with only an
SSL listener, each on free ports of our own, each requiring a password.

They are our own child processes, stopped by their own PID (the node's whole process group,
which we created): the machine's shared RabbitMQ (5672) and Redis (6379) are never touched.
The node runs its own ``epmd`` on a free port, so it does not even register with the
machine's. Anything missing (openssl, a redis-server built without TLS, Erlang's ssl
application) FAILS the test with a clear message; nothing here skips.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from process_support import free_port, rabbitmq_node_env, rabbitmq_server, stop, tail

# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA certificate clients trust
    cert: Path  # the server certificate (127.0.0.1 and localhost), signed by the CA
    key: Path  # its private key


def make_certs(directory: Path) -> Certs:
    """A throwaway CA and a server certificate for ``127.0.0.1``/``localhost`` (two days)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed: the TLS test needs it to make its certificates")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ext.write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid, issuer\n",
        encoding="ascii",
    )
    steps = [
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256"),
            *("-keyout", str(ca_key), "-out", str(ca), "-days", "2"),
            *("-subj", "/CN=sasfleet throwaway test CA"),
            *("-addext", "basicConstraints=critical,CA:TRUE"),
            *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        ],
        [
            *(openssl, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256"),
            *("-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost"),
        ],
        [
            *(openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key)),
            *("-set_serial", f"0x{uuid.uuid4().hex[:16]}", "-days", "2", "-sha256"),
            *("-extfile", str(ext), "-out", str(cert)),
        ],
    ]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            pytest.fail(f"openssl failed ({' '.join(argv[:3])}): {done.stderr.strip()}")
    return Certs(ca=ca, cert=cert, key=key)


def client_context(certs: Certs) -> ssl.SSLContext:
    """What a verifying client uses: trusts our CA only, checks the host name."""
    return ssl.create_default_context(cafile=str(certs.ca))


# --------------------------------------------------------------------------- processes


def _wait(
    probe: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        try:
            if probe():
                return
        except (OSError, ssl.SSLError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not answer within {timeout}s:\n{tail(log)}")
        time.sleep(0.2)


def _tls_exchange(port: int, certs: Certs, hello: bytes, size: int) -> bytes:
    """Open a verified TLS connection to 127.0.0.1:``port``, send ``hello``, read a reply."""
    with (
        socket.create_connection(("127.0.0.1", port), 2) as raw,
        client_context(certs).wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        s.settimeout(3)
        s.sendall(hello)
        return s.recv(size)


# --------------------------------------------------------------------------- Redis


@dataclass
class TlsRedis:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def url(self, password: str, certs: Certs, db: int = 0) -> str:
        """``rediss://`` with the password and the CA the client trusts (redis-py reads
        ``ssl_ca_certs`` from the query)."""
        return (
            f"rediss://:{quote(password, safe='')}@127.0.0.1:{self.port}/{db}"
            f"?ssl_ca_certs={quote(str(certs.ca))}"
        )

    def stop(self) -> None:
        stop(self.proc)


def start_tls_redis(workdir: Path, certs: Certs, password: str) -> TlsRedis:
    """``redis-server`` listening on a TLS port only (``--port 0``), ``requirepass``."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed: run `make services` (it installs it)")
    home = workdir / "redis"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = home / "redis.log"
    argv = [
        *(server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"),
        *("--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key)),
        *("--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "no"),
        *("--requirepass", password),
        *("--save", "", "--appendonly", "no", "--dir", str(home), "--daemonize", "no"),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def pong() -> bool:
        # Unauthenticated, a TLS PING gets -NOAUTH: TLS works and the password is required.
        return _tls_exchange(port, certs, b"PING\r\n", 64).startswith(b"-NOAUTH")

    try:
        _wait(pong, proc, "redis-server (TLS)", log, 20)
    except RuntimeError as exc:
        if "tls" in str(exc).lower():
            pytest.fail(f"this redis-server has no TLS support (built without BUILD_TLS?): {exc}")
        raise
    except BaseException:
        stop(proc)
        raise
    return TlsRedis(port, proc, log)


# --------------------------------------------------------------------------- RabbitMQ


@dataclass
class TlsRabbit:
    port: int
    proc: subprocess.Popen[bytes]
    epmd: subprocess.Popen[bytes]
    log: Path
    home: Path

    def url(self, user: str, password: str, certs: Certs) -> str:
        """``amqps://`` with the CA the client trusts (aiormq reads ``cafile`` from the
        query)."""
        return (
            f"amqps://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}/"
            f"?cafile={quote(str(certs.ca))}"
        )

    def stop(self) -> None:
        try:
            stop(self.proc, group=True, timeout=60)
        finally:
            stop(self.epmd)


def start_tls_rabbit(workdir: Path, certs: Certs, user: str, password: str) -> TlsRabbit:
    """A private node with an SSL listener only (``listeners.tcp = none``), its own epmd,
    distribution port, data and log directories, no plugins, and one user (loaded from a
    definitions file at boot, so no ``guest`` user exists)."""
    server = rabbitmq_server()
    epmd_bin = shutil.which("epmd")
    if epmd_bin is None:
        pytest.fail("epmd (Erlang) is not installed: run `make services`")
    home = workdir / "rabbitmq"
    home.mkdir(parents=True, exist_ok=True)
    definitions = home / "definitions.json"
    definitions.write_text(
        json.dumps(
            {
                "users": [{"name": user, "password": password, "tags": ["administrator"]}],
                "vhosts": [{"name": "/"}],
                "permissions": [
                    {"user": user, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
                ],
            }
        ),
        encoding="utf-8",
    )
    definitions.chmod(0o600)
    port, dist_port, epmd_port = free_port(), free_port(), free_port()
    (home / "rabbitmq.conf").write_text(
        "listeners.tcp = none\n"
        f"listeners.ssl.default = 127.0.0.1:{port}\n"
        f"ssl_options.cacertfile = {certs.ca}\n"
        f"ssl_options.certfile = {certs.cert}\n"
        f"ssl_options.keyfile = {certs.key}\n"
        "ssl_options.verify = verify_none\n"
        "ssl_options.fail_if_no_peer_cert = false\n"
        f"load_definitions = {definitions}\n"
        "log.console = false\n",
        encoding="utf-8",
    )
    (home / "enabled_plugins").write_text("[].\n", encoding="utf-8")
    (home / "rabbitmq-env.conf").write_text("", encoding="utf-8")
    log = home / "console.log"
    epmd = subprocess.Popen(
        [epmd_bin, "-port", str(epmd_port), "-address", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    env = {
        **rabbitmq_node_env(
            home, f"sasfleet-tls-{uuid.uuid4().hex[:8]}@localhost", epmd_port, dist_port
        ),
        "RABBITMQ_PID_FILE": str(home / "beam.pid"),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [server],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=home,
                start_new_session=True,
            )
    except BaseException:
        stop(epmd)
        raise
    rabbit = TlsRabbit(port, proc, epmd, log, home)

    def answers() -> bool:
        # Over TLS, the AMQP 0-9-1 header is answered with a Connection.Start METHOD frame.
        return _tls_exchange(port, certs, b"AMQP\x00\x00\x09\x01", 7)[:1] == b"\x01"

    try:
        _wait(answers, proc, "rabbitmq-server (SSL listener)", log, 120)
    except BaseException:
        rabbit.stop()
        raise
    return rabbit


def tls_refuses_plaintext(port: int) -> bool:
    """Whether a plaintext client gets no protocol answer on ``port`` (TLS only)."""
    try:
        with socket.create_connection(("127.0.0.1", port), 2) as s:
            s.settimeout(3)
            s.sendall(b"PING\r\n")
            answer = s.recv(64)
    except OSError:
        return True
    return not answer.startswith((b"+PONG", b"-NOAUTH", b"AMQP", b"\x01"))
