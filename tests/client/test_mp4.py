import av
import numpy as np
import pytest

from avatar_client.events import AudioPacket
from avatar_client.mp4 import Mp4Writer


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


def read_back(path):
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        facts = {
            "duration_s": container.duration / av.time_base,
            "codec": video.codec_context.name,
            "tag": video.codec_tag,
            "size": (video.codec_context.width, video.codec_context.height),
            "pix_fmt": video.codec_context.pix_fmt,
            "fps": float(video.average_rate),
            "audio_codec": audio.codec_context.name,
            "audio_rate": audio.codec_context.sample_rate,
        }
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    return facts, frames, pcm * 32767  # AAC decodes to float; compare on the int16 scale


def test_writes_a_playable_mp4_on_the_packets_clock(tmp_path, synthetic):
    path = tmp_path / "out.mp4"
    with Mp4Writer.for_session(path, synthetic.ready) as writer:
        for event in synthetic.interleaved():
            writer.write(event)
    facts, frames, pcm = read_back(path)
    n = len(synthetic.video)
    assert facts["codec"] == "h264" and facts["tag"] == "avc1" and facts["pix_fmt"] == "yuv420p"
    assert facts["size"] == (320, 240)
    assert facts["fps"] == pytest.approx(25.0)
    assert facts["audio_codec"] == "aac" and facts["audio_rate"] == 48_000
    assert len(frames) == n
    assert abs(facts["duration_s"] - n / 25) <= 1 / 25
    for image, colour in zip(frames, synthetic.colours):  # stored as sent, in order
        assert np.abs(image[8:40, 8:40].reshape(-1, 3).mean(axis=0) - colour).max() < 12
    # The speech survives AAC: same length (within one AAC frame) and the same pitch.
    assert abs(len(pcm) / 48_000 - n / 25) < 1024 / 48_000 + 1e-6
    assert dominant_hz(pcm, 48_000) == pytest.approx(dominant_hz(synthetic.speech.astype(np.float32), 48_000), abs=3)


def test_file_starts_at_the_first_keyframe_with_its_audio(tmp_path, synthetic):
    path = tmp_path / "late.mp4"
    with Mp4Writer.for_session(path, synthetic.ready) as writer:
        for event in synthetic.interleaved()[2 * 4 :]:  # joins at frame 4; keyframe at 10
            writer.write(event)
    facts, frames, pcm = read_back(path)
    n = len(synthetic.video) - 10
    assert len(frames) == n and writer.frames_written == n
    assert abs(facts["duration_s"] - n / 25) <= 1 / 25
    assert abs(len(pcm) - writer.audio_samples_written) <= 2048
    assert writer.audio_samples_written == n * 48_000 // 25


def test_a_hole_in_the_audio_becomes_silence(tmp_path, synthetic):
    path = tmp_path / "hole.mp4"
    dropped = {5, 6, 7}
    with Mp4Writer.for_session(path, synthetic.ready) as writer:
        for video, audio in zip(synthetic.video, synthetic.audio):
            if video.frame_index not in dropped:
                writer.write(audio)
            writer.write(video)
    _, _, pcm = read_back(path)
    assert writer.audio_samples_written == len(synthetic.speech)
    # The AAC track starts with 1024 samples of encoder delay that the edit list trims;
    # look well inside the hole and well inside the speech around it.
    hole = pcm[5 * 1920 + 400 : 8 * 1920 - 400]
    assert np.abs(hole.astype(np.int32)).max() < 300
    assert np.abs(pcm[9 * 1920 : 11 * 1920].astype(np.int32)).max() > 3000


def test_audio_at_another_rate_is_refused(tmp_path, synthetic):
    with Mp4Writer.for_session(tmp_path / "x.mp4", synthetic.ready) as writer:
        writer.write(synthetic.video[0])
        with pytest.raises(ValueError, match="clock rate"):
            writer.write(AudioPacket(b"\x00\x00" * 441, 0, 44_100, 0.0))
