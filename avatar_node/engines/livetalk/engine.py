"""The livetalk engine: LiveTalk's causal student served block by block from live speech.

One `LiveTalkEngine` per node holds the networks (DiT, VAE, wav2vec2) and the prompt
cache; each session is a `LiveTalkStream`. A step is one block of 3 latent frames: 9 video
frames for a session's first block, 12 after (`next_step_frames`), at 16 fps only (the
model's rate; see `NATIVE_FPS`). Per block and session:

1. wav2vec2 features computed the release's way over as much of the playing turn as has
   arrived (at least the step and its look-ahead; the whole turn once it is all there), again
   only when more arrived (audio_features.TurnAudioFeatures); silence features when nobody
   speaks, so idle and listening blocks come from the same model;
2. the prompt: the session's, "listening" while the user talks and the avatar does not,
   or a behaviour's for a few blocks after it is triggered (prompts.py);
3. 4 denoising passes + the cache pass, batched across the sessions of one `step_batch`
   (sampler.py); the block's frame numbers follow the node's timeline (frame_index), so a
   live session that skipped time stays aligned and positions never run out (window.py);
4. causal cached VAE decode of the clean latents, started before the cache pass; on a GPU
   it runs on its own CUDA stream, overlapping that pass;
5. frames pasted onto the session's canvas around the face crop (framing.py).

`reset_speech` (an interrupt) drops the audio context; the block being rendered is never
cut, so an interrupt shows from the next block boundary on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avatar_node.engines.base import (
    FRAMINGS,
    AvatarInputError,
    Conditioning,
    Engine,
    EngineInfo,
    EngineStream,
    FaceBox,
    Identity,
    StreamOptions,
    TurnAudio,
)

from .audio import group_block_features
from .audio_features import FRAME_SAMPLES, TurnAudioFeatures, Wav2VecEncoder
from .config import ModelConfig, StreamConfig
from .framing import Compositor, CropBox, crop_to_model, face_crop
from .model import PromptConditioning
from .prompts import BEHAVIOUR_PROMPTS, DEFAULT_PROMPT, PromptNotEncoded, PromptStore
from .sampler import BlockSampler, SessionState
from .text_encoder import PromptEncoder
from .vae import WanVAE, load_vae
from .vae_tiny import StreamDecoder, TinyVAE
from .weights import (
    DIT_FILE,
    PROMPTS_DIR,
    TEXT_ENCODER_FILE,
    TINY_VAE_FILE,
    TINY_VAE_SOURCE,
    TOKENIZER_DIR,
    VAE_FILE,
    check_weights_dir,
    find_wav2vec_dir,
    load_dit,
    load_model_config,
    load_tiny_vae,
)

log = logging.getLogger(__name__)

ENGINE_NAME = "livetalk"
#: The model's frame rate. The engine renders at this rate only: converting to another
#: rate would either repeat frames unevenly (judder) or cost an interpolation per frame,
#: and 16 fps already carries the lip motion the model learned.
NATIVE_FPS = 16.0
#: Blocks a triggered behaviour's prompt stays on (3 blocks = 2.25 s).
BEHAVIOUR_BLOCKS = 3
#: The user's voice above this RMS (float, full scale 1) counts as "the user is talking".
LISTEN_RMS = 0.01
#: Identities and prompt K/V kept in memory.
IDENTITY_CACHE = 32
PROMPT_CACHE = 8
#: A live session needs one block per 0.75 s; capacity keeps this share of that as margin.
REALTIME_MARGIN = 0.8
#: Which decoder turns latents into frames: the full Wan2.1 VAE (the release's quality), the
#: tiny one (much faster, softer; needs TINY_VAE_FILE) or "auto" (tiny when its file is there).
VAE_CHOICES = ("full", "tiny", "auto")


@dataclass(frozen=True, eq=False)
class LiveTalkIdentityData:
    """What `prepare` makes of a photo; shared read-only by every stream of it."""

    photo: np.ndarray  # RGB uint8, decoded (at most 2048 px a side)
    crop: CropBox  # the face-centred square, in `photo` pixels
    model_image: np.ndarray  # the crop at the model's size, RGB uint8
    reference: torch.Tensor  # VAE latent [16, h, w], float32, CPU


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device (is this a CPU build of torch?)")
    return resolved


class LiveTalkEngine(Engine):
    """LiveTalk-1.3B served from a weights directory (layout: weights.py; check it with
    ``avatar-node check-weights DIR``; try it with ``avatar-node make-tiny-weights DIR``)."""

    def __init__(
        self,
        weights_dir: str | Path,
        device: str = "auto",
        *,
        dtype: torch.dtype | None = None,
        max_clip_frames: int = 480,
        lookahead_frames: int = 4,
        max_batch: int | None = None,
        compile: bool = False,
        measure_capacity: bool | None = None,
        overlap_decode: bool = True,
        vae: str = "full",
    ) -> None:
        root = Path(weights_dir)
        if not root.is_dir():
            raise ValueError(
                f"weights directory {root} does not exist; see `avatar-node check-weights --help` for its layout"
            )
        if vae not in VAE_CHOICES:
            raise ValueError(f"vae must be one of {', '.join(VAE_CHOICES)}, not {vae!r}")
        tiny_path = root / TINY_VAE_FILE
        if vae == "tiny" and not tiny_path.is_file():
            raise ValueError(
                f"vae 'tiny' needs the tiny decoder {tiny_path}: download {TINY_VAE_SOURCE} into {root} "
                f"(or serve with the full VAE: --vae full)"
            )
        use_tiny = vae == "tiny" or (vae == "auto" and tiny_path.is_file())
        # The full VAE never reads the tiny decoder's file, so a bad one only matters when used.
        bad = [r.name for r in check_weights_dir(root) if not r.ok and (use_tiny or r.path != tiny_path)]
        if bad:
            raise ValueError(
                f"weights directory {root} has problems in: {', '.join(bad)}; run `avatar-node "
                f"check-weights {root}` for details"
            )
        self.root = root
        self.device = resolve_device(device)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.cfg: ModelConfig = load_model_config(root)
        self.stream_cfg = StreamConfig()
        started = time.perf_counter()
        self.dit = load_dit(root / DIT_FILE, self.cfg.dit, dtype=self.dtype, device=self.device)
        self.vae = load_vae(root / VAE_FILE, self.cfg.vae, dtype=self.dtype, device=self.device)
        # The reference image is always encoded by the full VAE; only decoding may go tiny.
        self.decode_vae: WanVAE | TinyVAE = (
            load_tiny_vae(tiny_path, dtype=self.dtype, device=self.device, latent_channels=self.cfg.vae.z_dim)
            if use_tiny
            else self.vae
        )
        self.vae_kind = "tiny" if use_tiny else "full"
        self.audio = Wav2VecEncoder(find_wav2vec_dir(root), device=self.device, dtype=self.dtype)
        if self.audio.feature_dim != self.cfg.dit.audio_feature_dim:
            raise ValueError(
                f"wav2vec2 gives {self.audio.feature_dim} features per frame, the DiT takes "
                f"{self.cfg.dit.audio_feature_dim}"
            )
        if compile:
            self._compile()
        self.sampler = BlockSampler(self.dit, self.stream_cfg)
        can_encode = (root / TEXT_ENCODER_FILE).is_file()
        self.prompts = PromptStore(root / PROMPTS_DIR, self._prompt_encoder if can_encode else None)
        self.default_prompt = DEFAULT_PROMPT
        self.behaviours = frozenset(
            name
            for name, text in BEHAVIOUR_PROMPTS.items()
            if name != "listening" and (can_encode or self.prompts.has(text))
        )
        self.max_clip_frames = max_clip_frames
        self.lookahead_frames = lookahead_frames
        self._lock = threading.RLock()
        self._identities: OrderedDict[str, Identity] = OrderedDict()
        self._prompt_kv: OrderedDict[str, PromptConditioning] = OrderedDict()
        self.silence_features: dict = {}
        self._detector: object | None = None
        self._decode_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        #: Decode on the side CUDA stream, overlapping the cache pass (off: one stream, to measure the gain).
        self.overlap_decode = overlap_decode
        self._capacity: int | None = None
        if max_batch is None:
            max_batch = 4 if self.device.type == "cpu" else 8
        self.info = EngineInfo(
            name=ENGINE_NAME,
            native_fps=NATIVE_FPS,
            frames_per_step=12,
            audio_lookahead_ms=math.ceil(lookahead_frames * 1000 * FRAME_SAMPLES / 16_000),
            max_batch=max_batch,
            description="LiveTalk-1.3B streaming video diffusion (GPU): 16 fps, blocks of 0.75 s, "
                        "batched across sessions.",
        )
        self.default_prompt_kv()  # fail at start, not in the first session, if it cannot be had
        log.info(
            "livetalk engine ready on %s (%s, %s VAE decoder) in %.1f s",
            self.device,
            str(self.dtype).removeprefix("torch."),
            self.vae_kind,
            time.perf_counter() - started,
        )
        if measure_capacity if measure_capacity is not None else self.device.type == "cuda":
            self._capacity = self.measure_capacity()
            self.info = dataclasses.replace(self.info, max_batch=max(1, min(max_batch, self._capacity)))

    # -- setup helpers --------------------------------------------------------------------

    def _prompt_encoder(self) -> PromptEncoder:
        return PromptEncoder(
            self.root / TEXT_ENCODER_FILE,
            self.root / TOKENIZER_DIR,
            self.cfg.text_encoder,
            device=self.device,
            dtype=self.dtype,
        )

    def _compile(self) -> None:
        # Only the dense per-token parts: attention runs per session against its own cache.
        for block in self.dit.blocks:
            dense: Any = block
            dense.ffn = torch.compile(dense.ffn, dynamic=True)
            dense.cross_attn = torch.compile(dense.cross_attn, dynamic=True)

    def prompt_kv(self, prompt: str) -> PromptConditioning:
        """Cross-attention K/V of a prompt (text or cached name), kept for the next sessions."""
        with self._lock:
            kv = self._prompt_kv.get(prompt)
            if kv is None:
                embeds = self.prompts.get(prompt)
                with torch.no_grad():
                    kv = self.dit.encode_prompt(embeds)
                self._prompt_kv[prompt] = kv
                while len(self._prompt_kv) > PROMPT_CACHE:
                    self._prompt_kv.popitem(last=False)
            self._prompt_kv.move_to_end(prompt)
            return kv

    def default_prompt_kv(self) -> PromptConditioning:
        return self.prompt_kv(self.default_prompt)

    # -- the contract -----------------------------------------------------------------------

    def prepare(self, image: bytes) -> Identity:
        digest = hashlib.sha256(image).hexdigest()[:32]
        with self._lock:
            cached = self._identities.get(digest)
            if cached is not None:
                self._identities.move_to_end(digest)
                return cached
        from avatar_node.engines.portrait.photo import decode_photo

        photo = decode_photo(image)
        faces = self._find_faces(photo.rgb)
        if not faces:
            raise AvatarInputError(
                "No face was found in the avatar image. Use a photo where one face is clearly "
                "visible, facing the camera, at least about 60 pixels wide.",
                "NO_FACE",
            )
        face = max(faces, key=lambda f: f.width * f.height)
        box = face_crop(photo.rgb.shape[1], photo.rgb.shape[0], face)
        model_image = crop_to_model(photo.rgb, box, (self.cfg.video_height, self.cfg.video_width))
        pixels = torch.from_numpy(model_image).permute(2, 0, 1).float().div(127.5).sub(1.0)
        with self._lock, torch.no_grad():
            reference = self.vae.encode(pixels[None].to(self.device))[0, :, 0].cpu()
        s = photo.scale
        data = LiveTalkIdentityData(photo.rgb, box, model_image, reference)
        identity = Identity(
            avatar_id=f"{digest}-{ENGINE_NAME}",
            engine=ENGINE_NAME,
            image_width=photo.width,
            image_height=photo.height,
            face=FaceBox(face.x / s, face.y / s, face.width / s, face.height / s),
            faces_found=len(faces),
            data=data,
        )
        with self._lock:
            self._identities[digest] = identity
            while len(self._identities) > IDENTITY_CACHE:
                self._identities.popitem(last=False)
        return identity

    def _find_faces(self, rgb: np.ndarray) -> list[FaceBox]:
        from avatar_node.engines.portrait.detection import FaceDetector
        from avatar_node.engines.portrait.models import FaceModels

        with self._lock:
            if self._detector is None:
                self._detector = FaceDetector(FaceModels())
            detector = self._detector
        return [FaceBox(d.x0, d.y0, d.x1 - d.x0, d.y1 - d.y0) for d in detector.detect(rgb) if d.size >= 24]  # type: ignore[attr-defined]

    def open(self, identity: Identity, options: StreamOptions) -> LiveTalkStream:
        if not isinstance(identity.data, LiveTalkIdentityData):
            raise ValueError("This identity was prepared by another engine; prepare it with 'livetalk'.")
        if abs(float(options.fps) - NATIVE_FPS) > 1e-6:
            raise AvatarInputError(
                f"the livetalk engine renders at {NATIVE_FPS:g} fps; ask for {NATIVE_FPS:g} fps "
                f"output (or leave fps unset)"
            )
        if options.framing not in FRAMINGS:
            raise AvatarInputError(f"framing must be one of {', '.join(FRAMINGS)}, not {options.framing!r}")
        base_prompt = options.prompt or self.default_prompt
        try:
            prompt = self.prompt_kv(base_prompt)
        except PromptNotEncoded as exc:
            raise AvatarInputError(str(exc)) from None
        with self._lock:
            session = self.sampler.open_session(identity.data.reference, prompt, seed=options.seed)
        return LiveTalkStream(self, identity.data, options, session, base_prompt)

    def step_batch(self, streams: Sequence[EngineStream], conds: Sequence[Conditioning]) -> list[list[np.ndarray]]:
        lt_streams = [s for s in streams if isinstance(s, LiveTalkStream)]
        if len(lt_streams) != len(streams):
            raise TypeError("step_batch got a stream of another engine")
        if not lt_streams:
            return []
        with self._lock:
            return self._step(lt_streams, conds)

    def realtime_capacity(self) -> int | None:
        return self._capacity

    def close(self) -> None:
        with self._lock:
            self._identities.clear()
            self._prompt_kv.clear()
            self.silence_features.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- one batched block --------------------------------------------------------------------

    def _step(self, streams: list[LiveTalkStream], conds: Sequence[Conditioning]) -> list[list[np.ndarray]]:
        plans = [s.plan_block(c) for s, c in zip(streams, conds)]
        audio = torch.stack([p.audio for p in plans]).to(self.device)
        decoded: list[torch.Tensor | None] = [None] * len(streams)
        side = self._decode_stream if self.overlap_decode else None

        def decode(clean: torch.Tensor) -> None:
            # Decoding needs only the clean latents, so it runs beside the cache pass.
            if side is not None:
                side.wait_stream(torch.cuda.current_stream(self.device))
                clean.record_stream(side)
                with torch.cuda.stream(side):
                    for i, stream in enumerate(streams):
                        decoded[i] = stream.decode_block(clean[i : i + 1])
            else:
                for i, stream in enumerate(streams):
                    decoded[i] = stream.decode_block(clean[i : i + 1])

        self.sampler.step(
            [s.session for s in streams],
            audio,
            first_frames=[p.first_latent for p in plans],
            prompts=[p.prompt for p in plans],
            on_clean=decode,
        )
        if side is not None:
            torch.cuda.current_stream(self.device).wait_stream(side)
        out = []
        for stream, video in zip(streams, decoded):
            assert video is not None
            out.append(stream.compose_frames(video))
        return out

    # -- capacity ----------------------------------------------------------------------------------

    def measure_capacity(self, most: int = 16) -> int:
        """Sessions one batched block step keeps at 1x (with a margin), measured on random input:
        grows the batch while a full-window block of every session fits in REALTIME_MARGIN of
        0.75 s and in memory. At least 1 (a slower machine still serves one session, late)."""
        h, w = self.cfg.latent_size
        block_s = self.stream_cfg.frames_per_block * 4 / NATIVE_FPS
        prompt = self.default_prompt_kv()
        best = 0
        for batch in range(1, most + 1):
            try:
                seconds = self._time_batch(batch, prompt, (h, w))
            except torch.cuda.OutOfMemoryError:
                break
            log.info(
                "livetalk capacity probe: %d session(s) per block step in %.3f s (budget %.3f s)",
                batch,
                seconds,
                block_s * REALTIME_MARGIN,
            )
            if seconds > block_s * REALTIME_MARGIN:
                break
            best = batch
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return max(best, 1)

    def _time_batch(self, batch: int, prompt: PromptConditioning, latent_hw: tuple[int, int]) -> float:
        sessions = [self.sampler.open_session(torch.zeros(16, *latent_hw), prompt, seed=i) for i in range(batch)]
        decoders = [self.decode_vae.decode_stream() for _ in sessions]
        cfg = self.cfg.dit
        audio = torch.zeros(
            batch,
            self.stream_cfg.frames_per_block,
            cfg.audio_frames_per_latent,
            cfg.audio_feature_dim,
            device=self.device,
        )

        def run() -> None:
            clean = self.sampler.step(sessions, audio)
            for i, d in enumerate(decoders):
                d.decode(clean[i : i + 1])

        warm = self.stream_cfg.window_frames // self.stream_cfg.frames_per_block + 1  # fill the window
        for _ in range(warm):
            run()
        self._sync()
        start = time.perf_counter()
        run()
        self._sync()
        return time.perf_counter() - start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@dataclass
class _BlockPlan:
    first_latent: int
    audio: torch.Tensor  # [3, 4, feature_dim]
    prompt: PromptConditioning


class LiveTalkStream(EngineStream):
    """One session. Not thread-safe on its own: the engine's lock serialises its steps."""

    def __init__(
        self,
        engine: LiveTalkEngine,
        data: LiveTalkIdentityData,
        options: StreamOptions,
        session: SessionState,
        base_prompt: str,
    ) -> None:
        self.engine = engine
        self.options = options
        self.session = session
        self.base_prompt = base_prompt
        self.decoder: StreamDecoder = engine.decode_vae.decode_stream()
        self.features = TurnAudioFeatures(
            engine.audio,
            lookahead_frames=engine.lookahead_frames,
            max_clip_frames=engine.max_clip_frames,
            silence_cache=engine.silence_features,
        )
        self.compositor = Compositor(data.photo, data.crop, options.width, options.height, options.framing)
        self.blocks = 0
        self._origin = 0
        self._own_turns = 0
        self._behaviour: tuple[str, int] | None = None
        self._warned_prompts: set[str] = set()
        self.closed = False

    # -- the contract ----------------------------------------------------------------------

    def step(self, cond: Conditioning) -> list[np.ndarray]:
        return self.engine.step_batch([self], [cond])[0]

    def next_step_frames(self) -> int:
        per_block = self.engine.stream_cfg.frames_per_block * 4
        return per_block - 3 if self.blocks == 0 else per_block

    def reset_speech(self) -> None:
        self.features.reset()

    def close(self) -> None:
        self.closed = True
        self.decoder.reset()
        self.session = None  # type: ignore[assignment]  # frees the KV cache

    # -- block work (called by the engine under its lock) ------------------------------------------

    def plan_block(self, cond: Conditioning) -> _BlockPlan:
        if self.closed:
            raise RuntimeError("step() on a closed livetalk stream")
        frames = self.next_step_frames()
        first = self.blocks == 0
        if first:
            self._origin = cond.frame_index
            first_latent = 0
        else:
            relative = max(cond.frame_index - self._origin, 0)
            first_latent = max(self.session.cache.next_frame, (relative + 3) // 4)
        speaking = any(cond.speaking)
        features = self.features.features(frames, cond.speaking, self._turn_audio(cond))
        grouped = group_block_features(features, first_block=first)
        prompt = self._choose_prompt(cond, speaking)
        self.blocks += 1
        return _BlockPlan(first_latent, grouped, prompt)

    def _turn_audio(self, cond: Conditioning) -> TurnAudio | None:
        """The pipeline hands over each turn's audio; a step made by hand (a benchmark, a
        tool) carries only its own speech and look-ahead, which is then a turn of its own."""
        if cond.turn_audio is not None or not any(cond.speaking):
            return cond.turn_audio
        self._own_turns -= 1
        return TurnAudio(self._own_turns, 0, 0, np.asarray(cond.speech, np.float32), complete=True)

    def _choose_prompt(self, cond: Conditioning, speaking: bool) -> PromptConditioning:
        engine = self.engine
        for name in cond.behaviours:
            if name in engine.behaviours:
                self._behaviour = (name, self.blocks + BEHAVIOUR_BLOCKS)
        if cond.prompt:
            self.base_prompt = cond.prompt
        wanted = self.base_prompt
        if self._behaviour is not None and self.blocks < self._behaviour[1]:
            wanted = BEHAVIOUR_PROMPTS[self._behaviour[0]]
        elif not speaking and _rms(cond.listen) > LISTEN_RMS and engine.prompts.has(BEHAVIOUR_PROMPTS["listening"]):
            wanted = BEHAVIOUR_PROMPTS["listening"]
        try:
            return engine.prompt_kv(wanted)
        except PromptNotEncoded as exc:
            if wanted not in self._warned_prompts:
                self._warned_prompts.add(wanted)
                log.warning("keeping the previous prompt: %s", exc)
            return self.session.prompt

    def decode_block(self, clean: torch.Tensor) -> torch.Tensor:
        video = self.decoder.decode(clean)  # [1, 3, T, H, W] in [-1, 1]
        return ((video[0] + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 3, 0)

    def compose_frames(self, video: torch.Tensor) -> list[np.ndarray]:
        frames = video.cpu().numpy()
        return [self.compositor.compose(frame) for frame in frames]


def _rms(samples: np.ndarray) -> float:
    x = np.asarray(samples, dtype=np.float32)
    return float(np.sqrt(np.mean(x * x))) if x.size else 0.0
