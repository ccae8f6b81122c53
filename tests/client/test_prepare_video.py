"""`avatar prepare --video`: a clip of the person becomes an avatar on a node."""

from __future__ import annotations

import pytest
from avatar_client.cli import main

from ..portrait.clip_media import real_clip

server = pytest.importorskip("avatar_node.server")


@pytest.fixture(scope="module")
def node():
    node = server.start_background_node(server.NodeConfig(host="127.0.0.1", port=0, engines=["portrait"]))
    yield node
    node.stop()


def test_prepare_video_prints_an_id(node, tmp_path, capsys):
    clip = tmp_path / "carphone.mp4"
    clip.write_bytes(real_clip("carphone"))
    assert main(["prepare", "--video", str(clip), "--target", node.target]) == 0
    out = capsys.readouterr()
    assert out.out.strip().startswith("portrait-")
    assert "176x144, 1 face(s)" in out.err
    # A 4 s clip works, and the user is told what a longer one would add.
    assert "note: The clip shows a usable face for" in out.err and "30-120 s" in out.err, out.err


def test_prepare_video_refuses_what_the_node_cannot_take(node, tmp_path, capsys):
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\x00\x00\x00\x20ftypisom" + bytes(17 * 2**20))
    assert main(["prepare", "--video", str(big), "--target", node.target]) == 2
    assert "at most 16 MB" in capsys.readouterr().err
    assert main(["prepare", "--target", node.target]) == 2
    assert "one of them" in capsys.readouterr().err
