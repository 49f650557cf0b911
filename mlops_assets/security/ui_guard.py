"""`mlops ui --secure`: Debian's nginx in front of the Dagster UI.

Dagster OSS has no authentication, accepts GraphQL mutations by GET and answers any Host header:
any page the operator visits can delete runs with an ``<img src>``, and DNS rebinding reaches it.
The guard serves the UI on ``https://127.0.0.1:<port>`` with basic auth (a generated password),
a self-signed certificate, a Host and Origin allow-list, and /graphql only by POST with a JSON
body or the UI's websocket (nginx.conf.template). Everything it writes lives in
``$MLOPS_HOME/ui-guard/``; nginx and `dg dev` run as the current user, in the foreground.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import re
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

USER = "mlops"
TEMPLATE = Path(__file__).with_name("nginx.conf.template")
CERTIFICATE_DAYS = 365
RENEW_BEFORE = timedelta(days=30)
START_TIMEOUT = 15  # seconds for nginx to listen
# Ctrl-C arrives as SIGINT (KeyboardInterrupt); these are turned into one too.
# Characters an nginx configuration cannot hold inside a quoted path without changing its meaning.
UNSAFE_PATH = re.compile(r"[\x00-\x1f\x7f\"'\\$;{}]")


class UiGuardError(Exception):
    """The guard cannot start or one of its servers stopped: the message says which and why."""


@dataclass(frozen=True)
class Guard:
    folder: Path  # $MLOPS_HOME/ui-guard
    port: int  # nginx, on 127.0.0.1: the address the operator opens
    upstream: int  # the Dagster webserver, on 127.0.0.1

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def password_file(self) -> Path:
        return self.folder / "password"

    @property
    def certificate(self) -> Path:
        return self.folder / "cert.pem"

    @property
    def config(self) -> Path:
        return self.folder / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.folder / "error.log"


def prepare(home: Path, port: int, upstream: int) -> Guard:
    """Write the guard's folder: password (kept across starts), htpasswd, certificate (renewed a
    month before it expires) and nginx.conf. Files holding a secret are 0600, the folder 0700."""
    folder = home.resolve() / "ui-guard"
    if UNSAFE_PATH.search(str(folder)):
        raise UiGuardError(
            f"{folder!r}: MLOPS_HOME holds a quote, backslash, '$', ';', brace or control "
            "character, which an nginx configuration cannot hold; choose another MLOPS_HOME"
        )
    guard = Guard(folder, port, upstream)
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    password = _password(guard.password_file)
    _write_private(folder / "htpasswd", f"{USER}:{_ssha(password)}\n".encode())
    if not _certificate_valid(guard.certificate):
        key, certificate = _self_signed_certificate()
        _write_private(folder / "key.pem", key)
        guard.certificate.write_bytes(certificate)
    text = TEMPLATE.read_text()
    for placeholder, value in {
        "__GUARD__": str(folder),
        "__PORT__": str(port),
        "__UPSTREAM__": str(upstream),
        "__USER__": 'user "root" "root";' if os.geteuid() == 0 else "",
    }.items():
        text = text.replace(placeholder, value)
    guard.config.write_text(text)
    return guard


def nginx_command(guard: Guard) -> list[str]:
    """nginx, in the foreground, on this guard's configuration (startup errors to its log)."""
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if binary is None:
        raise UiGuardError("nginx is not installed: `make nginx` installs Debian's package")
    return [binary, "-p", f"{guard.folder}/", "-c", str(guard.config), "-e", str(guard.error_log)]


def check_config(guard: Guard) -> None:
    """`nginx -t`: a configuration nginx refuses is reported before anything starts."""
    result = subprocess.run(
        [*nginx_command(guard), "-t", "-q"], capture_output=True, text=True, timeout=30
    )
    if result.returncode != 0:
        raise UiGuardError(f"nginx refuses {guard.config}:\n{result.stderr.strip()}")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now: the Dagster webserver's, behind nginx."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _password(path: Path) -> str:
    """The basic-auth password: generated once, then kept (0600) so a browser's saved one works."""
    if path.exists():
        path.chmod(0o600)
        password = path.read_text().strip()
        if password:
            return password
    password = secrets.token_urlsafe(24)
    _write_private(path, f"{password}\n".encode())
    return password


def _ssha(password: str) -> str:
    """nginx's salted SHA-1 `{SSHA}` scheme: enough for a random 192-bit password, which no
    dictionary holds, and built in (Python's `crypt` module is deprecated)."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read, also when it already existed with another mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(fd, 0o600)
        file.write(data)


def _certificate_valid(path: Path) -> bool:
    if not path.exists() or not path.with_name("key.pem").exists():
        return False
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    return certificate.not_valid_after_utc - datetime.now(UTC) > RENEW_BEFORE


def _self_signed_certificate() -> tuple[bytes, bytes]:
    """A P-256 key and a certificate for localhost and 127.0.0.1 (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CERTIFICATE_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)
