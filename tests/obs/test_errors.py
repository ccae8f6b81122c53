"""Every way `avatar obs` can be misused or left without a peer ends in one line that says what to do."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading

import pytest

from avatar_obs import ControlClient

from ..support.waits import free_port


def refused(  # type: ignore[no-untyped-def]
    start, *args: str, env: dict[str, str] | None = None, timeout: float = 30, status: int = 1
) -> str:
    """Run a command that must fail with exit `status` (2: the command line's own mistake, 1: the
    work failed); return its one error line."""
    command = start(*args, env=env)
    assert command.finish(timeout) == status, command.output
    assert "Traceback" not in command.output, command.output
    errors = [line for line in command.lines if line.startswith("error: ")]
    assert len(errors) == 1, command.output
    return errors[0]


def test_obs_not_running_or_websocket_off(start):
    port = free_port()
    line = refused(start, "--setup", "--obs-host", "127.0.0.1", "--obs-port", str(port))
    assert f"cannot reach OBS at 127.0.0.1:{port}" in line
    assert "Tools > WebSocket Server Settings" in line and "Enable WebSocket server" in line


def test_another_program_on_the_websocket_port(start):
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        line = refused(
            start, "--setup", "--obs-host", "127.0.0.1", "--obs-port", str(server.server_address[1])
        )
    finally:
        server.shutdown()
        server.server_close()
    assert "something other than obs-websocket answers" in line and "--obs-port" in line


def test_a_port_that_accepts_but_never_answers(start):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        line = refused(
            start, "--setup", "--obs-host", "127.0.0.1", "--obs-port", str(silent.getsockname()[1])
        )
    assert "did not answer in time" in line


def test_wrong_or_missing_password(obs_studio, start):
    where = ["--setup", "--obs-host", obs_studio.address.host, "--obs-port", str(obs_studio.address.port)]
    wrong = refused(start, *where, "--obs-password", "not-the-password")
    assert "refused the password" in wrong and "OBS_WEBSOCKET_PASSWORD" in wrong
    assert "not-the-password" not in wrong
    missing = refused(start, *where, env={"OBS_WEBSOCKET_PASSWORD": ""})
    assert "asks for a password" in missing


def test_a_scene_or_source_name_that_does_not_fit(obs_studio, start):
    where = ["--setup", "--obs-host", obs_studio.address.host, "--obs-port", str(obs_studio.address.port)]
    env = {"OBS_WEBSOCKET_PASSWORD": obs_studio.address.password}
    line = refused(start, *where, "--scene", "No Such Scene", env=env)
    assert "no scene named 'No Such Scene'" in line and "'Scene'" in line
    obs = obs_studio.connect()
    try:
        scene = obs.request("GetSceneList")["currentProgramSceneName"]
        obs.request(
            "CreateInput",
            {
                "sceneName": scene,
                "inputName": "Taken name",
                "inputKind": "color_source_v3",
                "inputSettings": {},
                "sceneItemEnabled": False,
            },
        )
        line = refused(start, *where, "--source-name", "Taken name", env=env)
        assert "already has a source named 'Taken name' of another kind" in line and "--source-name" in line
    finally:
        obs.request("RemoveInput", {"inputName": "Taken name"})
        obs.close()


def test_control_port_in_use(node, start):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refused(
            start,
            "--target",
            node.target,
            "--udp",
            str(free_port(socket.SOCK_DGRAM)),
            "--control-port",
            str(port),
            status=2,
        )
    assert f"cannot listen for control requests on 127.0.0.1:{port}" in line and "--control-port" in line


def test_a_second_command_on_the_same_udp_port(node, start):
    port = free_port(socket.SOCK_DGRAM)
    first = start("--target", node.target, "--udp", str(port), "--size", "320x240")
    first.wait_for("publishing MPEG-TS")
    line = refused(start, "--target", node.target, "--udp", str(port), status=2)
    assert f"already publishes to udp://127.0.0.1:{port}" in line and f"(pid {first.process.pid})" in line
    assert first.stop() == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--image", "/no/such/photo.jpg"], "no such image file: /no/such/photo.jpg"),
        (["--speak", "/no/such/speech.wav"], "no such audio file: /no/such/speech.wav"),
        (["--mic", "alsa:no-such-device"], "cannot open the alsa device 'no-such-device'"),
        (["--mic", "nowhere:device"], "neither an audio file nor a device"),
        (["--buttons", "interrupt,dance"], "unknown button 'dance'"),
    ],
)
def test_bad_arguments(node, start, args, expected):
    line = refused(start, "--target", node.target, "--udp", str(free_port(socket.SOCK_DGRAM)), *args, status=2)
    assert expected in line


def test_a_url_that_is_not_rtmp(node, start):
    line = refused(start, "--target", node.target, "--rtmp", "http://example.com/live", status=2)
    assert "--rtmp wants rtmp://HOST[:PORT]/APP/STREAM_KEY" in line


def test_a_photo_the_node_refuses_stops_the_command(node, start, tmp_path):
    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_text("these are not pixels")
    line = refused(
        start,
        "--target",
        node.target,
        "--udp",
        str(free_port(socket.SOCK_DGRAM)),
        "--image",
        str(not_a_photo),
    )
    assert "could not be read as a picture" in line


def test_without_the_obs_extra_the_command_says_how_to_get_it():
    code = (
        "import sys; sys.modules['obsws_python'] = None; "  # as if the extra were not installed
        "from avatar_client.cli import main; sys.exit(main(['obs', '--setup']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: `avatar obs` needs the OBS extra (obsws_python is missing): pip install 'avatar-node[obs]'"
    )


def test_an_rtmp_server_that_never_answers_does_not_freeze_the_command(node, start):
    with socket.socket() as silent:  # accepts connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        control = free_port()
        command = start(
            "--target", node.target, "--rtmp", f"rtmp://127.0.0.1:{silent.getsockname()[1]}/live/key",
            "--size", "320x240", "--control-port", str(control),
        )
        command.wait_for(r"did not answer the RTMP handshake within 5 s.*retrying", timeout=20)
        status = ControlClient(f"http://127.0.0.1:{control}", timeout=3).status()  # still responsive
        assert status["node_connected"] and not status["stream_connected"], status
        assert command.stop(timeout=15) == 0, command.output
