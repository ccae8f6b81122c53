"""TLS for the client: channel credentials from PEM files (or bytes).

    AsyncAvatarClient("node.example.com:50051", credentials=tls_credentials())            # public CA
    AsyncAvatarClient("node:50051", credentials=tls_credentials(ca="ca.pem"))              # own CA
    AsyncAvatarClient("node:50051", credentials=tls_credentials(ca="ca.pem", cert="client.pem",
                                                                key="client.key"))        # mutual TLS
"""

from __future__ import annotations

from pathlib import Path

import grpc

PemSource = str | Path | bytes


def _pem(source: PemSource | None, what: str) -> bytes | None:
    if source is None:
        return None
    if isinstance(source, bytes):
        data = source
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read the {what} {source}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        named = "" if isinstance(source, bytes) else f" {source}"
        raise ValueError(f"the {what}{named} is not in PEM form")
    return data


def tls_credentials(
    ca: PemSource | None = None,
    cert: PemSource | None = None,
    key: PemSource | None = None,
) -> grpc.ChannelCredentials:
    """Credentials for a node that serves TLS.

    `ca`: the CA certificate(s) that signed the node's certificate (default: the system's
    roots). `cert` and `key`: this client's certificate and private key, for a node that
    asks for one (mutual TLS).
    """
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs its private key: give both cert and key")
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(ca, "CA certificate"),
        private_key=_pem(key, "private key"),
        certificate_chain=_pem(cert, "client certificate"),
    )
