"""The command lines' shared kit and the defects a new user met: each test fails without its fix."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from avatar_client import tls_credentials
from avatar_client.cli import main as avatar_main
from avatar_client.cli_kit import parse_size, parse_target
from avatar_client.text import MAX_TEXT_CHARS, split_text
from avatar_client.virtualcam.sources import Disconnected, NodeSource, SourceFrame

from avatar_node.server import NodeConfig, start_background_node

from .certs import make_pki


def _error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(("error: ", "avatar")), text
    assert "Traceback" not in text
    return lines[-1]


@pytest.mark.parametrize("text, target", [
    ("localhost", "localhost:50051"), ("10.0.0.5:7000", "10.0.0.5:7000"), ("[::1]", "[::1]:50051"),
    ("dns:///node.example.com:443", "dns:///node.example.com:443"),
])
def test_a_target_without_a_port_gets_50051(text, target):
    assert parse_target(text) == target


@pytest.mark.parametrize("text", ["localhost:99999", "localhost:0", "localhost:http", ":50051"])
def test_a_target_out_of_range_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_target(text)


def test_target_99999_exits_2_before_any_work(capsys):
    with pytest.raises(SystemExit) as exited:
        avatar_main(["info", "--target", "localhost:99999"])
    assert exited.value.code == 2 and "1 to 65535" in capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["say", "Hi", "--size", "100000x100000"], "each side 64 to 1920"),
])
def test_a_size_no_node_renders_is_a_usage_mistake(argv, needle, capsys):
    with pytest.raises(SystemExit) as exited:
        avatar_main(argv)
    assert exited.value.code == 2 and needle in capsys.readouterr().err
    assert parse_size("1280x720") == (1280, 720)


def test_a_missing_image_exits_2(tmp_path: Path, capsys):
    code = avatar_main(["say", "Hi", "--image", str(tmp_path / "none.jpg"), "-o", str(tmp_path / "a.mp4")])
    assert code == 2 and "no such image file" in _error_line(capsys.readouterr().err)


def test_an_image_over_the_message_limit_says_to_shrink_it(tmp_path: Path, capsys):
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8" + bytes(17 * 2**20))
    code = avatar_main(["say", "Hi", "--image", str(big), "-o", str(tmp_path / "a.mp4")])
    line = _error_line(capsys.readouterr().err)
    assert code == 2 and "at most 16 MiB" in line and "shrink or re-encode" in line
    assert "larger than max" not in line


def test_text_without_words_writes_nothing_and_fails(tmp_path: Path, capsys):
    out = tmp_path / "dots.mp4"
    assert avatar_main(["say", "...", "-o", str(out), "-q"]) == 2
    assert "no words" in _error_line(capsys.readouterr().err) and not out.exists()


def test_long_text_is_cut_into_turns_a_node_takes():
    text = " ".join(f"Sentence number {i} is here." for i in range(600))  # about 16,000 characters
    parts = split_text(text)
    assert len(parts) == 4 and all(len(p) <= MAX_TEXT_CHARS for p in parts)
    assert " ".join(parts) == text and all(p.endswith(".") for p in parts)


def test_quiet_silences_the_face_models_native_chatter(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "avatar_client.cli", "say", "Hi", "-q", "-o",
                             str(tmp_path / "hi.mp4")], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "XNNPACK" not in result.stderr and result.stderr.strip() == "", result.stderr


@pytest.fixture(scope="module")
def token_node():
    with start_background_node(NodeConfig(port=0, auth_token="right")) as running:
        yield running


def test_a_wrong_token_is_told_about_token_and_the_variable(token_node, capsys):
    assert avatar_main(["info", "--target", token_node.target, "--token", "wrong"]) == 1
    line = _error_line(capsys.readouterr().err)
    assert "--token" in line and "AVATAR_TOKEN" in line and "metadata" not in line


def test_info_prints_the_load(token_node, capsys):
    assert avatar_main(["info", "--target", token_node.target, "--token", "right"]) == 0
    assert "load:      0% of the node's compute" in capsys.readouterr().out


def test_prepare_help_does_not_promise_an_in_process_node(capsys):
    with pytest.raises(SystemExit):
        avatar_main(["prepare", "--help"])
    assert "start one in this process" not in capsys.readouterr().out


@pytest.mark.parametrize("command, hides, extra", [
    ("from avatar_client.cli import main; sys.exit(main(['obs', '--help']))", "obsws_python", "[obs]"),
    ("from avatar_livekit.cli import main; sys.exit(main(['--help']))", "livekit", "[livekit]"),
])
def test_help_works_without_the_extra_and_names_it(command, hides, extra):
    code = f"import sys; sys.modules[{hides!r}] = None; {command}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    if hides == "obsws_python":
        assert f"pip install 'avatar-node{extra}'" in result.stdout
    else:  # argparse's help; the extra is named when a subcommand runs
        assert "worker" in result.stdout
        run = subprocess.run([sys.executable, "-c", code.replace("'--help'", "'worker'")],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 1 and f"pip install 'avatar-node{extra}'" in run.stderr, run.stderr


def test_livekit_takes_the_shared_names_and_keeps_the_old_ones():
    pytest.importorskip("livekit.agents")
    from avatar_livekit.cli import _parser

    new = _parser().parse_args(["bot", "--room", "r", "--image", "p.jpg", "--follow", "a", "--target", "h",
                                "--token", "t", "--size", "320x240"])
    assert (new.target, new.token, new.size) == ("h:50051", "t", (320, 240))
    old = _parser().parse_args(["worker", "--node", "h:1", "--node-token", "t"])
    assert (old.target, old.token) == ("h:1", "t")
    assert "--node-token" not in _parser().format_help()


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory):
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    config = NodeConfig(port=0, tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))
    with start_background_node(config) as running:
        yield running, pki


def test_cam_hands_its_tls_options_to_the_camera(tls_node, monkeypatch):
    node, pki = tls_node
    from avatar_client.virtualcam import runner

    seen = {}

    class Recorder:
        def __init__(self, options):
            seen["options"] = options

        def run(self):
            return 0

    monkeypatch.setattr(runner, "VirtualCam", Recorder)
    target = node.target.replace("127.0.0.1", "localhost")
    assert avatar_main(["cam", "--target", target, "--ca", str(pki.ca), "--no-mic"]) == 0
    credentials = seen["options"].credentials
    assert credentials is not None

    async def first_frame():  # the camera's own source, with those credentials, on the TLS node
        source = NodeSource(target, image=(Path(__file__).parents[2] / "avatar_node/assets/sample_portrait.jpg")
                            .read_bytes(), width=320, height=240, credentials=credentials, connect_timeout_s=20)
        items = source.items()
        try:
            async for item in items:
                assert not isinstance(item, Disconnected), item
                if isinstance(item, SourceFrame):
                    return item
        finally:
            await items.aclose()

    assert asyncio.run(first_frame()) is not None
    refused = NodeSource(target, image=b"x", credentials=tls_credentials(ca=pki.other_ca), connect_timeout_s=5)

    async def untrusted():
        items = refused.items()
        try:
            async for item in items:
                return item
        finally:
            await items.aclose()

    assert isinstance(asyncio.run(untrusted()), Disconnected)  # the CA given is the CA used
