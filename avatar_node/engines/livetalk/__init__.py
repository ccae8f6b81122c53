"""The livetalk engine's model core: LiveTalk's 1.3B causal student, streamed block by block.

Needs the ``[diffusion]`` extra (torch, safetensors); importing this package alone does not
import torch, so the node can list the engine without it.

Modules, one job each:

* ``config``      network shapes (full size, ``DiTConfig.tiny()`` for tests) and the streaming recipe
* ``model``       the causal DiT in one file; ``python -m avatar_node.engines.livetalk.model --keys``
                  prints the full-size parameter names and shapes (built on the meta device) as JSON
* ``audio``       which video frames' wav2vec2 features feed which latent frame
* ``window``      which earlier frames a block attends to, at which RoPE positions
* ``cache``       one session's bounded KV cache: identity sinks plus a rolling window
* ``sampler``     4-step block sampling with the t=0 cache pass, batched over sessions; the
                  offline block-causal reference pass
* ``weights``     the weights directory layout, header-only checks, the DiT loader
* ``check_weights`` the ``avatar-node check-weights DIR`` command

Weights directory (users bring their own; see ``check_weights --help``)::

    DIR/LiveTalk-1.3B-V0.1/model.safetensors
    DIR/Wan2.1-T2V-1.3B/Wan2.1_VAE.pth
    DIR/wav2vec2/                      (facebook/wav2vec2-base-960h)
    DIR/prompts/NAME.safetensors       ("prompt_embeds": umT5-XXL output [tokens <= 512, 4096])

Facts from the public release (GAIR-NLP/LiveTalk) that this package depends on are stated in
the docstrings of ``model`` (shapes, key names, audio layers), ``sampler`` (timesteps, cache
pass, reference frame) and ``window`` (15-frame window, 9 sink frames, positions).
"""
