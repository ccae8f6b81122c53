"""The livetalk engine: LiveTalk's 1.3B causal student, streamed block by block from live speech.

Needs the ``[diffusion]`` extra (torch, safetensors, transformers<5); importing this package
alone does not import torch, so the node can list the engine without it.

Public entry points:

* ``engine.LiveTalkEngine(weights_dir, device="auto", ...)``  the engine (base.Engine)
* ``tiny.make_tiny_weights(dir)``          a complete random-weight directory at tiny size
* ``audio_features.whole_clip_features(waveform, num_frames, encoder)``  the release's features
* commands: ``avatar-node check-weights DIR``, ``make-tiny-weights DIR``, ``encode-prompts DIR ...``

Modules, one job each:

* ``config``         network shapes (released and tiny), the optional config.json, the streaming recipe
* ``model``          the causal DiT in one file (``python -m ...model --keys`` lists its tensors)
* ``audio``          which video frames' wav2vec2 features feed which latent frame
* ``audio_features`` wav2vec2 features: whole clip as released, and live over as much of a turn as arrived
* ``window``         which earlier frames a block attends to, at which RoPE positions
* ``cache``          one session's bounded KV cache (one rotated key copy): sinks plus a rolling window
* ``sampler``        4-step block sampling with the t=0 cache pass, batched over sessions
* ``vae``            the Wan2.1 VAE: reference encoding, causal cached block decoding
* ``vae_tiny``       an optional tiny decoder for Wan2.1 latents (TAEHV design), block by block
* ``text_encoder``   umT5 (Wan2.1's checkpoint) for pre-encoding prompts
* ``prompts``        prompt embeddings cached on disk; behaviour prompts
* ``framing``        the face-centred crop and the canvas around it
* ``engine``         the engine and its per-session stream
* ``weights``        the weights directory layout, header-only checks, loaders
* ``check_weights``, ``tiny``, ``encode_prompts``  the commands

Weights directory (users bring their own; ``avatar-node check-weights --help``)::

    DIR/LiveTalk-1.3B-V0.1/model.safetensors          (+ optional config.json: other shapes)
    DIR/Wan2.1-T2V-1.3B/Wan2.1_VAE.pth
    DIR/Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth + google/umt5-xxl/   (optional)
    DIR/wav2vec2-base-960h/                            (facebook/wav2vec2-base-960h)
    DIR/prompts/NAME.safetensors                       ("prompt_embeds" [tokens <= 512, 4096])
    DIR/taew2_1.pth                                    (optional: the tiny decoder, ``vae="tiny"``)

Facts from the public release (GAIR-NLP/LiveTalk, Wan2.1, OmniAvatar) that this package
depends on are stated in the docstrings of the modules that use them.
"""
