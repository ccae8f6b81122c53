"""Audio utilities: PCM parsing, sample conversion, streaming resampling."""

from __future__ import annotations

import numpy as np
import pytest

from avatar_node.engines.base import AvatarInputError
from avatar_node.media.audio import (
    StreamResampler,
    pcm_s16le_to_mono,
    to_float32,
    to_int16,
    validate_sample_rate,
)

RATE_PAIRS = [(44100, 48000), (48000, 16000), (22050, 48000)]


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def random_chunks(x: np.ndarray, rng: np.random.Generator, max_size: int = 2000) -> list[np.ndarray]:
    chunks, start = [], 0
    while start < x.size:
        size = int(rng.integers(0, max_size))  # zero-length chunks included
        chunks.append(x[start : start + size])
        start += size
    return chunks


def resample_chunked(resampler: StreamResampler, chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([resampler.process(c) for c in chunks] + [resampler.flush()])


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(x.size)))
    return float(np.argmax(spectrum) * rate / x.size)


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
@pytest.mark.parametrize("freq", [440.0, 3000.0])
def test_sine_keeps_frequency_and_amplitude(in_rate: int, out_rate: int, freq: float) -> None:
    x = to_int16(sine(freq, in_rate, 1.0, amplitude=0.5))
    y = resample_chunked(StreamResampler(in_rate, out_rate), random_chunks(x, np.random.default_rng(1)))
    assert y.dtype == np.int16
    assert y.size == out_rate
    assert peak_hz(y, out_rate) == pytest.approx(freq, abs=2.0)
    middle = to_float32(y[out_rate // 10 : -out_rate // 10])
    assert np.sqrt(np.mean(middle.astype(np.float64) ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    # In phase with the input: no delay is added (the resampler compensates its filter).
    t = np.arange(out_rate) / out_rate
    reference = 0.5 * np.sin(2 * np.pi * freq * t)
    error = to_float32(y)[out_rate // 10 : -out_rate // 10] - reference[out_rate // 10 : -out_rate // 10]
    assert np.sqrt(np.mean(error**2)) < 0.01


def test_downsampling_removes_what_the_new_rate_cannot_carry() -> None:
    x = to_int16(sine(12000.0, 48000, 1.0, amplitude=0.5))  # above 8 kHz: must not alias into the band
    y = resample_chunked(StreamResampler(48000, 16000), [x])
    assert np.abs(to_float32(y[1600:-1600])).max() < 0.01


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_chunked_equals_one_shot(in_rate: int, out_rate: int) -> None:
    rng = np.random.default_rng(2)
    x = to_int16(0.3 * rng.standard_normal(in_rate * 2).astype(np.float32))
    one_shot = resample_chunked(StreamResampler(in_rate, out_rate), [x])
    chunked = resample_chunked(StreamResampler(in_rate, out_rate), random_chunks(x, rng, max_size=700))
    assert chunked.size == one_shot.size
    assert np.abs(chunked.astype(np.int32) - one_shot).max() <= 1


@pytest.mark.parametrize(("in_rate", "out_rate"), [*RATE_PAIRS, (16000, 44100), (8000, 48000)])
def test_ten_minutes_in_random_chunks_produce_the_exact_count(in_rate: int, out_rate: int) -> None:
    rng = np.random.default_rng(3)
    block = to_int16(0.3 * rng.standard_normal(4096).astype(np.float32))
    resampler = StreamResampler(in_rate, out_rate)
    total_in = total_out = 0
    max_pending = 0.0
    while total_in < 10 * 60 * in_rate:
        size = int(rng.integers(1, 4096))
        total_out += resampler.process(block[:size]).size
        total_in += size
        max_pending = max(max_pending, resampler.pending_s)
    total_out += resampler.flush().size
    assert total_out == round(total_in * out_rate / in_rate)
    # The held-back audio stays a filter's length the whole time: no drift mid-stream either.
    assert max_pending < 0.003


def test_float32_variant() -> None:
    x = sine(1000.0, 44100, 0.5, amplitude=0.8)
    resampler = StreamResampler(44100, 48000, dtype=np.float32)
    y = resample_chunked(resampler, random_chunks(x, np.random.default_rng(4)))
    assert y.dtype == np.float32 and y.size == 24000
    assert peak_hz(y, 48000) == pytest.approx(1000.0, abs=2.0)
    assert np.abs(y[2400:-2400]).max() == pytest.approx(0.8, rel=0.01)
    with pytest.raises(TypeError, match="float32"):
        resampler.process(to_int16(x))


def test_identity_is_a_copy_and_flush_resets_for_a_new_stream() -> None:
    x = to_int16(sine(440.0, 16000, 0.1))
    same = StreamResampler(16000, 16000)
    out = same.process(x)
    assert np.array_equal(out, x) and out is not x
    assert same.flush().size == 0

    resampler = StreamResampler(48000, 16000)
    first = resample_chunked(resampler, [x])
    second = resample_chunked(resampler, [x])  # reused after flush: same answer, same count
    assert np.array_equal(first, second)
    assert first.size == round(x.size / 3)


def test_latency_is_a_fraction_of_a_millisecond() -> None:
    resampler = StreamResampler(44100, 48000)
    for _ in range(10):
        resampler.process(np.zeros(441, dtype=np.int16))  # 10 ms chunks
    assert 0 < resampler.pending_s < 0.002


def test_pcm_mono_and_stereo() -> None:
    mono = np.array([0, 1, -1, 32767, -32768], dtype="<i2")
    assert np.array_equal(pcm_s16le_to_mono(mono.tobytes(), 1), mono)
    stereo = np.array([[100, 300], [-32768, -32768], [32767, 32767], [1000, -1000]], dtype="<i2")
    mixed = pcm_s16le_to_mono(stereo.tobytes(), 2)
    assert mixed.dtype == np.int16
    assert mixed.tolist() == [200, -32768, 32767, 0]
    six = np.tile(np.arange(6, dtype="<i2") * 60, 3)
    assert pcm_s16le_to_mono(bytearray(six.tobytes()), 6).tolist() == [150, 150, 150]
    assert pcm_s16le_to_mono(b"", 2).size == 0


@pytest.mark.parametrize(
    ("data", "channels", "message"),
    [
        (b"\x00\x01\x02", 1, "length must be even; got 3 bytes"),
        (b"\x00" * 6, 2, "2 channels must be a multiple of 4 bytes"),
        (b"\x00" * 4, 0, "channels must be between 1 and 8; got 0"),
        (b"\x00" * 18, 9, "channels must be between 1 and 8; got 9"),
    ],
)
def test_bad_pcm_is_rejected(data: bytes, channels: int, message: str) -> None:
    with pytest.raises(AvatarInputError, match=message):
        pcm_s16le_to_mono(data, channels)


def test_sample_rates() -> None:
    assert validate_sample_rate(8000) == 8000
    assert validate_sample_rate(np.int64(192000)) == 192000
    with pytest.raises(AvatarInputError) as info:
        validate_sample_rate(0)
    assert str(info.value) == "sample_rate must be between 8000 and 192000 Hz; got 0"
    for bad in (7999, 192001, -16000):
        with pytest.raises(AvatarInputError, match="between 8000 and 192000 Hz"):
            validate_sample_rate(bad)
    for bad in (44100.5, "16000", True):
        with pytest.raises(AvatarInputError, match="whole number of Hz"):
            validate_sample_rate(bad)
    with pytest.raises(AvatarInputError, match="got 0"):
        StreamResampler(0, 16000)


def test_int16_float32_conversion() -> None:
    x = np.array([-32768, -1, 0, 1, 16384, 32767], dtype=np.int16)
    f = to_float32(x)
    assert f.dtype == np.float32
    assert f.tolist() == [-1.0, -1 / 32768, 0.0, 1 / 32768, 0.5, 32767 / 32768]
    assert np.array_equal(to_int16(f), x)
    assert to_int16(np.array([1.5, -1.5, 1.0, np.nan])).tolist() == [32767, -32768, 32767, 0]
    with pytest.raises(TypeError, match="int16"):
        to_float32(f)
