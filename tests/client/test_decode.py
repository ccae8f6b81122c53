import numpy as np

from avatar_client.decode import H264Decoder, has_parameter_sets
from avatar_client.events import VideoPacket


def split_parameter_sets(data: bytes) -> tuple[bytes, bytes]:
    """(SPS+PPS, the rest) of an Annex B keyframe."""
    units = [u for u in data.split(b"\x00\x00\x01") if u]
    params = b"".join(b"\x00\x00\x00\x01" + u.rstrip(b"\x00") for u in units if u[0] & 0x1F in (7, 8))
    rest = b"".join(b"\x00\x00\x00\x01" + u for u in units if u[0] & 0x1F not in (7, 8))
    return params, rest


def test_decodes_every_frame_with_its_metadata_and_pixels(synthetic):
    decoder = H264Decoder()
    frames = []
    for packet in synthetic.video:
        frames += decoder.decode(packet)
    frames += decoder.flush()
    assert [f.index for f in frames] == list(range(len(synthetic.video)))
    assert [f.pts for f in frames] == [p.pts for p in synthetic.video]
    assert [f.speaking for f in frames] == [p.speaking for p in synthetic.video]
    for frame, colour in zip(frames, synthetic.colours):
        assert frame.image.shape == (240, 320, 3) and frame.image.dtype == np.uint8
        corner = frame.image[8:40, 8:40].reshape(-1, 3).mean(axis=0)
        assert np.abs(corner - colour).max() < 12, (frame.index, corner, colour)


def test_skips_packets_before_the_first_keyframe(synthetic):
    decoder = H264Decoder()
    frames = []
    for packet in synthetic.video[3:]:  # starts mid-GOP; the next keyframe is frame 10
        frames += decoder.decode(packet)
    frames += decoder.flush()
    assert frames[0].index == 10
    assert len(frames) == len(synthetic.video) - 10


def test_codec_config_from_ready_is_used_when_the_keyframe_lacks_it(synthetic):
    first = synthetic.video[0]
    assert has_parameter_sets(first.data)
    params, rest = split_parameter_sets(first.data)
    assert params and not has_parameter_sets(rest)
    stripped = VideoPacket(rest, first.pts, first.duration, True, 0, False, 0.0)
    decoder = H264Decoder(codec_config=params)
    frames = decoder.decode(stripped) + decoder.flush()
    assert len(frames) == 1 and frames[0].image.shape == (240, 320, 3)
