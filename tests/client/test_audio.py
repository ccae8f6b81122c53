import wave

import av
import numpy as np
import pytest

from avatar_client.audio import chunk_pcm, read_audio_file, to_pcm
from .conftest import voiced_speech


def write_wav(path, samples: np.ndarray, rate: int) -> None:
    """samples: (n,) or (n, channels) int16."""
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())


def test_float_audio_is_scaled_and_clipped_to_int16():
    pcm = to_pcm(np.array([0.0, 0.5, -0.5, 1.0, -1.0, 3.0, -3.0], np.float32), 16_000)
    assert np.frombuffer(pcm.data, "<i2").tolist() == [0, 16384, -16384, 32767, -32767, 32767, -32767]
    assert (pcm.sample_rate, pcm.channels, pcm.frames) == (16_000, 1, 7)


def test_stereo_arrays_and_raw_bytes_keep_their_interleaving():
    stereo = np.array([[1, -1], [2, -2], [3, -3]], np.int16)
    pcm = to_pcm(stereo, 44_100)
    assert pcm.channels == 2 and pcm.frames == 3
    assert np.frombuffer(pcm.data, "<i2").tolist() == [1, -1, 2, -2, 3, -3]
    raw = to_pcm(pcm.data, 44_100, channels=2)
    assert raw == pcm


@pytest.mark.parametrize(
    "audio, rate, channels, error",
    [
        (np.zeros(10, np.int16), 4_000, 1, "outside 8000-192000"),
        (np.zeros(10, np.int16), 384_000, 1, "outside"),
        (b"\x00\x00\x00", 16_000, 1, "whole s16le samples"),
        (b"\x00\x00" * 3, 16_000, 2, "whole s16le samples"),
        (np.zeros((2, 4800), np.float32), 48_000, 1, "channel-first"),
        (np.zeros(10, np.int32), 48_000, 1, "int16 or float"),
    ],
)
def test_bad_audio_is_refused_with_a_reason(audio, rate, channels, error):
    with pytest.raises((ValueError, TypeError), match=error):
        to_pcm(audio, rate, channels)


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 192_000])
def test_chunks_are_at_most_100ms_and_lossless(rate):
    samples = voiced_speech(1.234, rate)
    pcm = to_pcm(samples, rate)
    chunks = list(chunk_pcm(pcm))
    assert all(len(c) <= rate // 10 * 2 for c in chunks)
    assert len(chunks) == -(-len(samples) // (rate // 10))
    assert b"".join(chunks) == pcm.data


def test_stereo_chunks_split_on_whole_frames():
    pcm = to_pcm(np.ones((4410 * 3 + 7, 2), np.int16), 44_100)
    chunks = list(chunk_pcm(pcm))
    assert [len(c) for c in chunks] == [4410 * 4] * 3 + [7 * 4]


def test_reads_a_stereo_wav_as_mono_at_its_own_rate(tmp_path):
    left = voiced_speech(0.8, 22_050, pitch_hz=120)
    path = tmp_path / "speech.wav"
    write_wav(path, np.stack([left, left // 2], axis=1), 22_050)
    samples, rate = read_audio_file(path)
    assert rate == 22_050 and samples.dtype == np.int16
    assert len(samples) == len(left)
    # Mixed down: between the two channels, close to their mean.
    expected = (left.astype(np.int32) + left // 2) / 2
    assert np.abs(samples - expected).max() < 0.02 * 32767


def test_a_rate_the_node_refuses_is_resampled_to_48k(tmp_path):
    path = tmp_path / "low.wav"
    write_wav(path, voiced_speech(1.0, 6_000, pitch_hz=200), 6_000)
    samples, rate = read_audio_file(path)
    assert rate == 48_000
    assert abs(len(samples) - 48_000) < 200
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    assert np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()] == pytest.approx(200, abs=2)


def test_reads_compressed_audio_too(tmp_path):
    path = tmp_path / "speech.flac"
    speech = voiced_speech(0.5, 16_000)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("flac", rate=16_000, layout="mono")
        frame = av.AudioFrame.from_ndarray(speech.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 16_000
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    samples, rate = read_audio_file(path)
    assert rate == 16_000 and np.array_equal(samples, speech)  # flac is lossless


def test_missing_and_non_audio_files_say_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such audio file"):
        read_audio_file(tmp_path / "nope.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio" * 10)
    with pytest.raises(ValueError, match="FFmpeg can read"):
        read_audio_file(junk)
