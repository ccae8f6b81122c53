"""TLS on gRPC with certificates made here: a TLS node refuses plaintext, serves the right CA;
with mutual TLS, a client without a certificate is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from avatar_client import AsyncAvatarClient, AvatarError, tls_credentials
from avatar_client.cli import main as avatar_main

from avatar_node.server import NodeConfig, start_background_node

from .certs import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _localhost(target: str) -> str:
    return target.replace("127.0.0.1", "localhost")  # the name the server certificate is for


async def _info(target: str, credentials: grpc.ChannelCredentials | None) -> str:
    async with AsyncAvatarClient(target, credentials=credentials) as client:
        return (await client.node_info(timeout=10)).version


@pytest.fixture(scope="module")
def tls_node(pki):
    config = NodeConfig(port=0, tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))
    with start_background_node(config) as running:
        yield running


@pytest.fixture(scope="module")
def mtls_node(pki):
    config = NodeConfig(port=0, tls_cert=str(pki.server_cert), tls_key=str(pki.server_key),
                        tls_client_ca=str(pki.ca))
    with start_background_node(config) as running:
        yield running


def test_tls_node_refuses_a_plaintext_client_with_a_clear_error(tls_node):
    with pytest.raises(AvatarError) as refused:
        asyncio.run(_info(_localhost(tls_node.target), None))
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    assert "it may require TLS (--tls, or --ca FILE" in str(refused.value)


def test_tls_node_serves_a_client_that_trusts_its_ca(tls_node, pki):
    assert asyncio.run(_info(_localhost(tls_node.target), tls_credentials(ca=pki.ca)))


def test_tls_client_names_the_ca_when_the_node_is_not_trusted(tls_node, pki):
    with pytest.raises(AvatarError) as refused:
        asyncio.run(_info(_localhost(tls_node.target), tls_credentials(ca=pki.other_ca)))
    assert "CA this client trusts: pass the CA that signed it (--ca)" in str(refused.value)


def test_mutual_tls_refuses_a_client_without_a_certificate(mtls_node, pki):
    target = _localhost(mtls_node.target)
    with pytest.raises(AvatarError) as refused:
        asyncio.run(_info(target, tls_credentials(ca=pki.ca)))
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    assert "client certificate (--cert FILE --key FILE)" in str(refused.value)
    with pytest.raises(AvatarError):
        asyncio.run(_info(target, None))
    assert asyncio.run(_info(target, tls_credentials(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)))


def test_cli_follows_tls(mtls_node, pki, capsys):
    target = _localhost(mtls_node.target)
    common = ["info", "--target", target, "--ca", str(pki.ca)]
    assert avatar_main([*common, "--cert", str(pki.client_cert), "--key", str(pki.client_key)]) == 0
    assert "engines:" in capsys.readouterr().out
    assert avatar_main(common) == 1
    assert "--cert FILE --key FILE" in capsys.readouterr().err
    assert avatar_main([*common, "--cert", str(pki.client_cert)]) == 2
    assert capsys.readouterr().err.strip() == "error: a client certificate needs its private key: give both " \
        "--cert and --key"


def test_tls_client_to_a_plaintext_node_says_so(pki):
    with start_background_node(NodeConfig(port=0)) as plain:
        with pytest.raises(AvatarError) as refused:
            asyncio.run(_info(_localhost(plain.target), tls_credentials(ca=pki.ca)))
    assert "does not seem to serve TLS" in str(refused.value)


@pytest.mark.parametrize("files, message", [
    ({"tls_cert": "cert"}, "TLS needs both --tls-cert"),
    ({"tls_client_ca": "ca"}, "--tls-client-ca needs --tls-cert and --tls-key"),
    ({"tls_cert": "cert", "tls_key": "missing"}, "cannot read the private key"),
    ({"tls_cert": "cert", "tls_key": "ca"}, "holds no private key"),
    ({"tls_cert": "junk", "tls_key": "key"}, "is not a PEM file"),
])
def test_bad_tls_files_are_one_clear_line(pki, tmp_path: Path, files, message, capsys):
    from avatar_node.cli import main as node_main

    paths = {"cert": pki.server_cert, "key": pki.server_key, "ca": pki.ca, "junk": tmp_path / "junk.pem",
             "missing": tmp_path / "missing.pem"}
    (tmp_path / "junk.pem").write_text("not a certificate")
    flags = {"tls_cert": "--tls-cert", "tls_key": "--tls-key", "tls_client_ca": "--tls-client-ca"}
    argv = ["serve", "--port", "0"]
    for field, which in files.items():
        argv += [flags[field], str(paths[which])]
    assert node_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
