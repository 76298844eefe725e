"""A real S3-compatible server on loopback, behind TLS, for backup tests.

moto's server speaks plain HTTP; pgBackRest speaks only HTTPS to S3. So the
server runs moto on one loopback port and an nginx on another, terminating TLS
with a throwaway CA made for the occasion and passing requests through
unbuffered, Host header untouched (S3 signatures cover it).

    with S3Server() as s3:
        s3.make_bucket("backups")
        client = s3.client()

``pause()`` stops nginx and ``resume()`` starts it again on the same port, so
while paused a client gets "connection refused" at once, and connections open
at the moment of the pause are closed rather than left hanging. moto keeps
running, so buckets and objects are still there after ``resume()``. Note that
pgBackRest 2.45 retries a refused connection for about four times its
``--io-timeout`` (60 s by default) before failing, so a backup only fails on a
pause longer than that; a test wanting the failure sooner passes a short
``--io-timeout``.

moto accepts any credentials; ``key`` and ``secret`` are fixed test values.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import http.client
import ipaddress
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
START_TIMEOUT = 20.0
PR_SET_PDEATHSIG = 1
FOLDER_PREFIX = "verger-s3-"

NGINX_CONF = """\
{user}worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {root}/nginx-access.log;
    client_body_temp_path {root}/nginx-tmp/body;
    proxy_temp_path {root}/nginx-tmp/proxy;
    fastcgi_temp_path {root}/nginx-tmp/fastcgi;
    uwsgi_temp_path {root}/nginx-tmp/uwsgi;
    scgi_temp_path {root}/nginx-tmp/scgi;
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {root}/server.pem;
        ssl_certificate_key {root}/server-key.pem;
        client_max_body_size 0;
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_http_version 1.1;
        location / {{
            proxy_pass http://127.0.0.1:{moto_port};
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


class S3Server:
    """moto's S3 on 127.0.0.1 behind an nginx TLS terminator; see the module doc."""

    key = "verger-test-key"
    secret = "verger-test-secret"
    region = "us-east-1"

    def __init__(self) -> None:
        self.root = Path()
        self.moto_port = 0
        self.tls_port = 0
        self._moto: subprocess.Popen[bytes] | None = None
        self._nginx: subprocess.Popen[bytes] | None = None
        self._client: S3Client | None = None

    @property
    def endpoint(self) -> str:
        """Where clients connect: ``127.0.0.1:PORT``, TLS only."""
        return f"127.0.0.1:{self.tls_port}"

    @property
    def url(self) -> str:
        return f"https://{self.endpoint}"

    @property
    def ca_file(self) -> str:
        """The PEM of the CA that signed the server's certificate."""
        return str(self.root / "ca.pem")

    def start(self) -> S3Server:
        """Start moto and nginx and return once an HTTPS request gets through."""
        remove_stale_folders()
        self.root = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
        (self.root / "owner").write_text(str(os.getpid()))
        # pgBackRest runs as postgres in the tests and must read the CA file.
        self.root.chmod(0o755)
        self.moto_port, self.tls_port = free_ports(2)
        try:
            self._moto = self._start_moto()
            write_certificates(self.root)
            self._write_nginx_conf()
            self.resume()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill nginx and moto with their children and remove the temp folder."""
        self.pause()
        if self._moto is not None:
            kill_group(self._moto)
            self._moto = None
        if self.root != Path() and self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)

    def pause(self) -> None:
        """Stop nginx: new connections are refused, open ones are closed."""
        if self._nginx is not None:
            # SIGTERM is nginx's fast shutdown: the listening socket and every
            # open connection close at once, and the master reaps its worker.
            kill_group(self._nginx, signal.SIGTERM)
            self._nginx = None

    def resume(self) -> None:
        """Start nginx again on the same port and wait until requests get through."""
        if self._nginx is not None:
            return
        self._nginx = subprocess.Popen(
            [
                *(NGINX, "-p", f"{self.root}/", "-e", f"{self.root}/nginx-error.log"),
                *("-c", f"{self.root}/nginx.conf", "-g", "daemon off;"),
            ],
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            # SIGTERM, not SIGKILL: nginx's master then takes its worker along.
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        self._wait_until_answering()

    def client(self) -> S3Client:
        """A new boto3 S3 client that checks the server against ``ca_file``.

        It makes one attempt per call, so a paused server fails at once.
        """
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            verify=self.ca_file,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=5,
                read_timeout=30,
            ),
        )

    def make_bucket(self, name: str) -> None:
        """Create a bucket through nginx, over verified TLS."""
        if self._client is None:
            self._client = self.client()
        self._client.create_bucket(Bucket=name)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def _start_moto(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1"]
        log = (self.root / "moto.log").open("wb")
        with log:
            return subprocess.Popen(
                [*command, "-p", str(self.moto_port)],
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGKILL),
            )

    def _write_nginx_conf(self) -> None:
        (self.root / "nginx-tmp").mkdir()
        # As root, nginx would hand its worker to "nobody", which cannot read
        # the key or write the temp paths in this folder.
        user = "user root;\n" if os.geteuid() == 0 else ""
        text = NGINX_CONF.format(
            user=user, root=self.root, tls_port=self.tls_port, moto_port=self.moto_port
        )
        (self.root / "nginx.conf").write_text(text)

    def _wait_until_answering(self) -> None:
        context = ssl.create_default_context(cafile=self.ca_file)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self._check_alive()
            if self._answers(context):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"S3 server did not answer in time\n{self._logs()}")
            time.sleep(0.02)

    def _answers(self, context: ssl.SSLContext) -> bool:
        """True when moto answered through nginx; 502 means moto is still booting."""
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.tls_port, context=context, timeout=2
        )
        try:
            connection.request("GET", "/")
            return connection.getresponse().status not in (502, 503, 504)
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    def _check_alive(self) -> None:
        for name, process in (("moto", self._moto), ("nginx", self._nginx)):
            if process is not None and process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with status {process.returncode}\n{self._logs()}"
                )

    def _logs(self) -> str:
        parts = []
        for name in ("nginx-error.log", "moto.log"):
            path = self.root / name
            if path.exists():
                tail = path.read_text(errors="replace")[-2000:]
                parts.append(f"--- {name}\n{tail}")
        return "\n".join(parts)


def free_ports(count: int) -> list[int]:
    """Free loopback ports outside the kernel's ephemeral range.

    Outside that range no outgoing connection can take the port while nginx
    is paused, so ``resume()`` can always bind it again.
    """
    low, high = ephemeral_range()
    candidates = [port for port in range(10000, 30000) if not low <= port <= high]
    random.shuffle(candidates)
    ports: list[int] = []
    # Port 0 (any free port) is the last resort when the range covers them all.
    for port in [*candidates, *[0] * count]:
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port))
            ports.append(int(sock.getsockname()[1]))
            if len(ports) == count:
                return ports
    raise RuntimeError("no free loopback port")


def ephemeral_range() -> tuple[int, int]:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low, high = text.split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def remove_stale_folders() -> None:
    """Remove the temp folders of servers whose test process was killed outright."""
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        try:
            owner = int((folder / "owner").read_text())
        except (OSError, ValueError):
            continue
        if not alive(owner):
            shutil.rmtree(folder, ignore_errors=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent(sig: int) -> Callable[[], None]:
    """A preexec_fn asking Linux to send ``sig`` to the child when its parent dies.

    So a test run killed before its teardown leaves no server behind. Linux
    sends it when the thread that started the child ends: start the server
    from a thread that lives as long as the server.
    """
    libc = ctypes.CDLL(None, use_errno=True)

    def arrange() -> None:
        libc.prctl(PR_SET_PDEATHSIG, sig)

    return arrange


def kill_group(process: subprocess.Popen[bytes], first: int = signal.SIGKILL) -> None:
    """End a process started in a session of its own, with all its children.

    ``first`` is sent to the leader alone, so that it can reap its own children
    (nginx's master does on SIGTERM); whatever is left after a few seconds is
    killed. Returns once no process of the group is left.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, first)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def write_certificates(folder: Path) -> None:
    """A throwaway CA (``ca.pem``) and a server certificate for 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "verger test CA")])
    ca = (
        certificate_builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(cert_sign=True), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    # pgBackRest 2.45 matches the host against the DNS entries only, never
    # the IP ones ("unable to find hostname '127.0.0.1' in certificate"), so
    # 127.0.0.1 is listed as both; Python matches an IP host to IP entries.
    names = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("127.0.0.1"),
        x509.DNSName("localhost"),
    ]
    server = (
        certificate_builder(server_name, ca_name, server_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "ca.pem").chmod(0o644)
    (folder / "server.pem").write_bytes(server.public_bytes(pem))
    key_path = folder / "server-key.pem"
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        server_key.private_bytes(
            pem,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def certificate_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
    )


def key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
