"""The trained student as a weights directory the livetalk engine serves unchanged.

The DiT goes to ``LiveTalk-1.3B-V0.1/model.safetensors`` under the release's key names; a
``config.json`` beside it records the shapes when they are not the released ones; the other
components (VAE, wav2vec2, prompts, text encoder, tiny decoder) are the ones the student was
trained against, copied from the base weights directory. The result is checked with the
same check `avatar-node check-weights` runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from avatar_node.engines.livetalk.config import DiTConfig, ModelConfig
from avatar_node.engines.livetalk.weights import CONFIG_FILE, DIT_FILE, check_weights_dir, load_model_config


def export_weights(student: Path | str, dit: DiTConfig, base: Path | str, out: Path | str) -> Path:
    """Write `out` from the student's safetensors and the base directory's other components."""
    from safetensors.torch import load_file, save_file

    base, out = Path(base), Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty; export into a new folder")
    base_cfg = load_model_config(base)
    for item in base.iterdir():
        if item.name == DIT_FILE.parts[0]:
            continue
        target = out / item.name
        if item.is_dir():
            shutil.copytree(item, target)
        else:
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, target)
    (out / DIT_FILE).parent.mkdir(parents=True, exist_ok=True)
    state = load_file(str(student))
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / DIT_FILE))
    cfg = ModelConfig(
        dit=dit,
        vae=base_cfg.vae,
        text_encoder=base_cfg.text_encoder,
        video_height=base_cfg.video_height,
        video_width=base_cfg.video_width,
    )
    if cfg != ModelConfig():
        (out / CONFIG_FILE).write_text(json.dumps(cfg.to_json(), indent=2) + "\n")
    bad = [r.describe() for r in check_weights_dir(out) if not r.ok]
    if bad:
        raise ValueError(f"the exported directory {out} does not pass check-weights:\n" + "\n\n".join(bad))
    return out
