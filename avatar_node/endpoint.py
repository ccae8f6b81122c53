"""Where the node listens and how: a port check that explains itself, and TLS credentials.

gRPC reports a busy port as "Failed to bind to address" plus a C-level log line, after
the server object exists; checking with a plain socket first gives one clear sentence.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import grpc


class ListenError(OSError):
    """The node cannot listen where it was asked to (port in use, not this machine's address...)."""


def check_port_free(host: str, port: int, option: str = "port") -> None:
    """Raise ListenError unless a server could listen on host:port now (port 0 is always fine)."""
    if not 0 <= port <= 65535:
        raise ListenError(f"{option} {port} is not a TCP port; use 1-65535, or 0 for any free port")
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host!r}: {exc.strerror}; use an address of this machine, "
                          "0.0.0.0 for all of them, or 127.0.0.1") from None
    if port == 0:
        return
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ListenError(f"port {port} on {host} is in use by another program; stop it, or choose "
                                      f"another {option} (0 picks a free one)") from None
                if exc.errno == errno.EACCES:
                    raise ListenError(f"no permission to listen on port {port} (ports below 1024 need "
                                      f"privileges); choose another {option}") from None
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise ListenError(f"{host} is not an address of this machine; use one of its addresses, "
                                      "0.0.0.0 for all of them, or 127.0.0.1") from None
                raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _read_pem(path: str, what: str, option: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {path} ({option}): {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{path} ({option}) is not a PEM file; give the {what} in PEM form")
    return data


def server_credentials(
    cert: str | None, key: str | None, client_ca: str | None = None
) -> grpc.ServerCredentials | None:
    """TLS credentials for the node, or None for plaintext. With `client_ca`, clients must
    present a certificate signed by it (mutual TLS)."""
    if not cert and not key:
        if client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first")
        return None
    if not cert or not key:
        raise ValueError("TLS needs both --tls-cert (certificate chain) and --tls-key (its private key)")
    chain = _read_pem(cert, "certificate", "--tls-cert")
    private_key = _read_pem(key, "private key", "--tls-key")
    if b"PRIVATE KEY-----" not in private_key:
        raise ValueError(f"{key} (--tls-key) holds no private key")
    roots = _read_pem(client_ca, "client CA certificate", "--tls-client-ca") if client_ca else None
    return grpc.ssl_server_credentials([(private_key, chain)], root_certificates=roots,
                                       require_client_auth=roots is not None)
