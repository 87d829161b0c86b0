"""``--serve [HOST:]PORT`` and its token: parsing and the security rules."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from stream_guard.errors import ConfigError

TOKEN_ENV = "STREAM_GUARD_TOKEN"
DEFAULT_HOST = "127.0.0.1"
MAX_TOKEN_BYTES = 4096


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """Where the live view listens; ``token`` (None: none) is never shown in reprs or logs."""

    host: str = DEFAULT_HOST
    port: int = 8080
    token: str | None = field(default=None, repr=False)

    @property
    def display_host(self) -> str:
        """The host as it goes in a URL (IPv6 in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host


def parse_bind(text: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPV6]:PORT`` -> ``(host, port)``; port 0 picks a free one."""
    text = text.strip()
    host = DEFAULT_HOST
    port_text = text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1:].startswith(":"):
            raise ConfigError(f"--serve {text!r}: expected [HOST]:PORT")
        host, port_text = text[1:end], text[end + 2:]
    elif ":" in text:
        host, port_text = text.rsplit(":", 1)
        if ":" in host:
            raise ConfigError(f"--serve {text!r}: put an IPv6 address in brackets, e.g. [::1]:8080")
    if not host:
        raise ConfigError(f"--serve {text!r}: empty host")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"--serve {text!r}: the port must be a number 0..65535")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: Path | None, environ: dict[str, str] | None = None) -> str | None:
    """The access token: the first line of ``token_file`` if given, else ``$STREAM_GUARD_TOKEN``, else None."""
    if token_file is not None:
        try:
            data = token_file.read_bytes()[:MAX_TOKEN_BYTES + 1]
        except OSError as e:
            raise ConfigError(f"--serve-token-file {token_file}: cannot read ({e.strerror})") from e
        if len(data) > MAX_TOKEN_BYTES:
            raise ConfigError(f"--serve-token-file {token_file}: longer than {MAX_TOKEN_BYTES} bytes")
        lines = data.decode("utf-8", "replace").strip().splitlines()
        token = lines[0].strip() if lines else ""
        if not token:
            raise ConfigError(f"--serve-token-file {token_file}: the file holds no token")
        return token
    token = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    return token or None


def serve_options(bind: str, token_file: Path | None = None, environ: dict[str, str] | None = None) -> ServeOptions:
    """Validate ``--serve`` and ``--serve-token-file``: a non-loopback bind needs a token."""
    host, port = parse_bind(bind)
    token = read_token(token_file, environ)
    if token is None and not is_loopback(host):
        raise ConfigError(f"--serve {host}:{port} listens beyond this machine: set a token in ${TOKEN_ENV} "
                          f"or pass --serve-token-file PATH (or serve on 127.0.0.1)")
    if token is not None and any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError("the --serve token must be printable text without spaces")
    return ServeOptions(host=host, port=port, token=token)
