"""The command lines' rough edges, each with its error text and exit status."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from avatar_client.cli import main as avatar_main

from avatar_node.cli import main as node_main
from avatar_node.server import NodeConfig, start_background_node


def _one_error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    assert "Traceback" not in text and "Event loop is closed" not in text
    return lines[0]


def test_busy_port_is_one_line_and_exit_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # A real process: what a user sees, C-level gRPC logging included.
        result = subprocess.run([sys.executable, "-m", "avatar_node.cli", "serve", "--port", str(port)],
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert f"port {port} on 127.0.0.1 is in use by another program" in line and "--port" in line


@pytest.mark.parametrize("argv, needle", [
    (["--port", "99999"], "--port 99999 is not a TCP port; use 1-65535, or 0 for any free port"),
    (["--port", "-1"], "--port -1 is not a TCP port"),
    (["--port", "0", "--metrics-port", "70000"], "--metrics-port 70000 is not a TCP port"),
])
def test_invalid_port_is_one_line_and_exit_2(argv, needle, capsys):
    assert node_main(["serve", *argv]) == 2
    assert needle in _one_error_line(capsys.readouterr().err)


def test_port_0_picks_a_free_port():
    with start_background_node(NodeConfig(port=0)) as node:
        assert int(node.target.rsplit(":", 1)[1]) > 0


def test_check_weights_help(capsys):
    with pytest.raises(SystemExit) as done:
        node_main(["check-weights", "--help"])
    assert done.value.code == 0
    assert "usage: avatar-node check-weights" in capsys.readouterr().out


@pytest.mark.parametrize("main, name", [(node_main, "avatar-node"), (avatar_main, "avatar")])
def test_version(main, name, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert re.fullmatch(rf"{name} \d+\.\d+\.\d+\S*", capsys.readouterr().out.strip())


@pytest.mark.parametrize("node_variable", ["AVATAR_TOKEN", "AVATAR_NODE_TOKEN"])
def test_one_token_variable_on_both_sides(node_variable):
    env = {k: v for k, v in os.environ.items() if k not in ("AVATAR_TOKEN", "AVATAR_NODE_TOKEN")}
    node = subprocess.Popen(
        [sys.executable, "-m", "avatar_node.cli", "serve", "--port", "0"],
        env={**env, node_variable: "s3cret"}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert node.stdout is not None
        ready = node.stdout.readline()
        assert "token required" in ready, ready
        target = re.search(r"ready on (\S+:\d+)", ready).group(1)
        info = [sys.executable, "-m", "avatar_client.cli", "info", "--target", target]
        with_token = subprocess.run(info, env={**env, "AVATAR_TOKEN": "s3cret"}, capture_output=True, text=True,
                                    timeout=60)
        assert with_token.returncode == 0, with_token.stderr
        without = subprocess.run(info, env=env, capture_output=True, text=True, timeout=60)
        assert without.returncode == 1
        assert "missing or wrong token" in _one_error_line(without.stderr)
    finally:
        node.terminate()
        node.wait(timeout=60)


def test_prepared_id_works_with_avatar_id(tmp_path: Path, capsys):
    photo = tmp_path / "me.jpg"
    from ..support.media import sample_photo

    photo.write_bytes(sample_photo())
    with start_background_node(NodeConfig(port=0)) as node:
        assert avatar_main(["prepare", str(photo), "--target", node.target]) == 0
        avatar_id = capsys.readouterr().out.strip()
        assert avatar_id and "\n" not in avatar_id
        out = tmp_path / "by-id.mp4"
        assert avatar_main(["say", "Hi.", "--avatar-id", avatar_id, "--target", node.target, "-q",
                            "-o", str(out)]) == 0
        assert out.stat().st_size > 1000
        speech = tmp_path / "speech.wav"
        _write_tone(speech)
        out2 = tmp_path / "speak-by-id.mp4"
        assert avatar_main(["speak", str(speech), "--avatar-id", avatar_id, "--target", node.target, "-q",
                            "-o", str(out2)]) == 0
        assert out2.stat().st_size > 1000
        capsys.readouterr()
        assert avatar_main(["say", "Hi.", "--avatar-id", "no-such-id", "--target", node.target, "-q",
                            "-o", str(tmp_path / "x.mp4")]) == 1
        assert "unknown avatar_id" in _one_error_line(capsys.readouterr().err)


def _write_tone(path: Path) -> None:
    import wave

    import numpy as np

    t = np.arange(16000) / 16000
    pcm = (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(pcm.tobytes())


@pytest.mark.parametrize("argv, needle", [
    (["prepare", "me.jpg"], "avatar prepare needs --target HOST:PORT"),
    (["say", "Hi", "--avatar-id", "abc"], "--avatar-id names a photo prepared on a running node: add --target"),
    (["say", "Hi", "--ca", "ca.pem"], "--tls, --ca, --cert and --key are for a remote node: add --target"),
])
def test_usage_mistakes_are_one_line_and_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "me.jpg").write_bytes(b"x")
    assert avatar_main([*argv, "-q"] if argv[0] == "say" else argv) == 2
    assert needle in _one_error_line(capsys.readouterr().err)


def test_image_and_avatar_id_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as done:
        avatar_main(["say", "Hi", "--image", "a.jpg", "--avatar-id", "b"])
    assert done.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_output_into_a_missing_folder_names_the_path(tmp_path: Path, capsys):
    target = tmp_path / "no" / "such" / "folder" / "out.mp4"
    assert avatar_main(["say", "Hello", "-q", "-o", str(target)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(target) in line and f"the folder {target.parent} does not exist" in line


def test_web_page_port_in_use_is_a_usage_error_and_exit_2():
    pytest.importorskip("aiortc")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "avatar_client.cli", "web", "--port", str(port)],
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    line = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert line and str(port) in line[0] and "pick another port" in line[0], result.stderr
    assert "Traceback" not in result.stderr


def test_web_open_says_so_when_no_browser_opens():
    pytest.importorskip("aiortc")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["BROWSER"] = "false"  # a "browser" that fails, and no display for any other
    result = subprocess.run([sys.executable, "-m", "avatar_client.cli", "web", "--port", "0", "--open",
                             "--duration", "0.5"], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "no web browser could be opened here: open http://127.0.0.1:" in result.stdout, result.stdout
