"""TLS towards the upstream: the trust store, and what to say when verification fails.

The store is the system's (OpenSSL's default paths: the container image's
``/etc/ssl/certs``, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when the process environment sets
them, which replace it), plus the PEM bundle named by ``--upstream-ca-file``, which adds to
it. Hostname checking and SNI are on, as ``ssl.create_default_context`` sets them.

A failed handshake is reported by cause, with a bounded set of words, so the envelope, the
log line and an operator all name the same thing: ``expired``, ``not_yet_valid``,
``untrusted``, ``wrong_host``, ``verify_failed`` or ``handshake_failed``.
"""

from __future__ import annotations

import ssl

import aiohttp

from sidecar.settings import SettingsError

# OpenSSL X509_V_ERR_* codes (include/openssl/x509_vfy.h), grouped by what the user must fix.
_EXPIRED = frozenset({10})  # CERT_HAS_EXPIRED
_NOT_YET_VALID = frozenset({9})  # CERT_NOT_YET_VALID
_WRONG_HOST = frozenset({62, 64})  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH
# UNABLE_TO_GET_ISSUER_CERT, DEPTH_ZERO_SELF_SIGNED, SELF_SIGNED_IN_CHAIN,
# UNABLE_TO_GET_ISSUER_CERT_LOCALLY, UNABLE_TO_VERIFY_LEAF_SIGNATURE, CERT_UNTRUSTED
_UNTRUSTED = frozenset({2, 18, 19, 20, 21, 27})

_WORDS = {
    "expired": "certificate expired",
    "not_yet_valid": "certificate not yet valid",
    "untrusted": "certificate not trusted (unknown issuer; see --upstream-ca-file)",
    "wrong_host": "certificate is for another host",
}


def client_context(ca_file: str | None) -> ssl.SSLContext:
    """The verifying client context; a bad ``ca_file`` is a settings error (exit 2)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError:
            reason = "no PEM certificate in it"
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
        else:
            return context
        raise SettingsError(f"--upstream-ca-file: cannot use {ca_file!r} ({reason})")
    return context


def failure_cause(exc: aiohttp.ClientSSLError) -> str:
    """One of a closed set of words naming why the handshake failed."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        code = getattr(exc.certificate_error, "verify_code", None)
        if code in _EXPIRED:
            return "expired"
        if code in _NOT_YET_VALID:
            return "not_yet_valid"
        if code in _WRONG_HOST:
            return "wrong_host"
        if code in _UNTRUSTED:
            return "untrusted"
        return "verify_failed"
    return "handshake_failed"


def failure_message(exc: aiohttp.ClientSSLError, cause: str, host: str) -> str:
    """The envelope's message: the host and the cause; OpenSSL's own words when no group fits.

    OpenSSL's reason strings come from a fixed table, never from the peer's bytes.
    """
    words = _WORDS.get(cause)
    if words is None:
        detail = _openssl_reason(exc)
        words = f"TLS handshake failed ({detail})" if detail else "TLS handshake failed"
        if cause == "verify_failed":
            words = f"certificate verification failed ({detail})"
    return f"TLS with the upstream {host} failed: {words}"


def _openssl_reason(exc: aiohttp.ClientSSLError) -> str:
    error = (
        exc.certificate_error
        if isinstance(exc, aiohttp.ClientConnectorCertificateError)
        else (exc.os_error)
    )
    message = getattr(error, "verify_message", None) or getattr(error, "reason", None)
    return str(message) if message else ""
