"""Connection failures as one sentence a person can act on (not aiohttp's internals), and TLS.

``describe`` turns what aiohttp or the OS raised while reaching a server into a sentence that
says what happened and what to do: ``connection refused: is `livedata serve` running at
http://localhost:8080?`` rather than ``Cannot connect to host localhost:8080 ssl:default [Connect
call failed ('127.0.0.1', 8080)]``.
"""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlsplit

import aiohttp

from livedata.client.types import LivedataError

TLS_HINT = "trust its CA with --cacert FILE (cacert= in Python), or skip the check with --insecure (insecure=True)"


def ssl_option(cacert: str | None, insecure: bool) -> ssl.SSLContext | bool:
    """What aiohttp's ``ssl=`` takes: a context that trusts ``cacert`` as well, False to skip
    verification, or True (the system's CAs).

    Raises:
        LivedataError: ``cacert`` cannot be read or is not a PEM certificate.
    """
    if insecure:
        return False
    if not cacert:
        return True
    try:
        return ssl.create_default_context(cafile=cacert)
    except FileNotFoundError:
        raise LivedataError(f"--cacert {cacert}: no such file") from None
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise LivedataError(f"--cacert {cacert}: cannot read a PEM certificate from it ({reason})") from None


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


def describe(exc: BaseException, url: str, timeout_s: float | None = None) -> str:
    """One sentence for a failure to reach (or keep talking to) the server at ``url``."""
    where = _host(url)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert = exc.certificate_error
        reason = getattr(cert, "verify_message", None) or getattr(cert, "reason", None) or str(cert)
        return f"the TLS certificate of {where} is not trusted ({reason}): {TLS_HINT}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
        reason = getattr(exc.os_error, "reason", None) or getattr(exc.os_error, "strerror", None) or str(exc.os_error)
        hint = ""
        if reason and "WRONG_VERSION_NUMBER" in str(reason).upper():
            hint = " (does it speak plain HTTP? then use http://)"
        return f"TLS handshake with {where} failed: {str(reason).lower().replace('_', ' ')}{hint}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, socket.gaierror):
            return f"cannot find the host {exc.host!r} (check --url)"
        if isinstance(os_error, ConnectionRefusedError) or getattr(os_error, "errno", None) == 111:
            return (f"cannot connect to {url}: connection refused "
                    "(is `livedata serve` running there? --url names another server)")
        if isinstance(os_error, TimeoutError):
            return f"cannot connect to {url}: no answer (a firewall? check --url)"
        text = getattr(os_error, "strerror", None) or str(os_error)
        return f"cannot connect to {url}: {str(text).lower()}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"{where} closed the connection without an answer (a TLS server spoken to with http://?)"
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        within = f" within {timeout_s:g} s" if timeout_s else ""
        return f"no answer from {where}{within}"
    if isinstance(exc, aiohttp.ClientOSError):
        text = exc.strerror or str(exc)
        return f"the connection to {where} failed: {str(text).lower()}"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"invalid server URL {url!r}: use http://host:port or https://host:port"
    text = str(exc) or type(exc).__name__
    return f"cannot reach {where}: {text}"


__all__ = ["TLS_HINT", "describe", "ssl_option"]
