"""Checkpoints: save_pretrained / load_pretrained (config.json + safetensors), never pickles.

OpenD4RT's ``opend4rt.ckpt`` import lives in :mod:`d4rt.opend4rt`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from d4rt.config import D4RTConfig
from d4rt.runtime.files import atomic_path, write_text_atomic

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
MAX_SHARD_BYTES = 2 * 1024**3  # shard above 2 GB (the protobuf / many-filesystem comfort limit)


def check_state_dict(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], source: str
) -> None:
    """Raise a ValueError listing missing, unexpected and mis-shaped tensors (names -> shapes)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = sorted(
        f"{k}: {tuple(found[k])} in the file, {tuple(expected[k])} in the model"
        for k in set(expected) & set(found)
        if tuple(found[k]) != tuple(expected[k])
    )
    if not (missing or unexpected or misshaped):
        return

    def block(title: str, items: list[str]) -> str:
        shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
        return f"\n  {title} ({len(items)}):\n    " + "\n    ".join(shown) if items else ""

    raise ValueError(
        f"{source} does not match the model"
        + block("missing", missing)
        + block("unexpected", unexpected)
        + block("mis-shaped", misshaped)
        + "\n  Check that the checkpoint and the config (preset, num_frames, image_size) belong together."
    )


def build_empty(config: D4RTConfig, attention: str | None = None) -> "torch.nn.Module":
    """The model on the meta device: names and shapes without allocating weights (``attention``: the model's
    attention backend, default sdpa)."""
    from d4rt.models import D4RT

    with torch.device("meta"):
        return D4RT(config) if attention is None else D4RT(config, attention)


def load_into(model_meta: "torch.nn.Module", state: dict[str, torch.Tensor], source: str) -> "torch.nn.Module":
    """Check ``state`` against a meta-device model, then assign it; rebuild the non-persistent buffers."""
    expected = {k: tuple(v.shape) for k, v in model_meta.state_dict().items()}
    check_state_dict(expected, {k: tuple(v.shape) for k, v in state.items()}, source)
    model_meta.load_state_dict(state, strict=True, assign=True)
    from d4rt.models.encoder import sinusoidal_position_embedding

    cfg, device = model_meta.config, next(iter(state.values())).device
    model_meta.encoder.pos_embed = sinusoidal_position_embedding(cfg.memory_tokens() - 1, cfg.enc_dim).to(device)
    return model_meta


def save_pretrained(model: "torch.nn.Module", directory: str | Path) -> Path:
    """``config.json`` + ``model.safetensors``, or shards + ``model.safetensors.index.json`` above 2 GB.

    The shard plan (names, index) is huggingface_hub's :func:`split_torch_state_dict_into_shards`, so the folder
    is what ``transformers``-style tools expect; each file is written atomically (never a half-written shard).
    """
    from huggingface_hub import split_torch_state_dict_into_shards

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    split = split_torch_state_dict_into_shards(state, filename_pattern="model{suffix}.safetensors",
                                               max_shard_size=MAX_SHARD_BYTES)
    for stale in [directory / WEIGHTS_NAME, directory / INDEX_NAME, *directory.glob("model-*-of-*.safetensors")]:
        stale.unlink(missing_ok=True)
    metadata = {"format": "pt", "d4rt_config": json.dumps(model.config.to_dict())}
    for filename, names in split.filename_to_tensors.items():
        with atomic_path(directory / filename) as tmp:
            save_file({k: state[k] for k in names}, str(tmp), metadata=metadata)
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        write_text_atomic(directory / INDEX_NAME, json.dumps(index, indent=2) + "\n")
    model.config.save(directory / CONFIG_NAME)
    return directory


def read_safetensors(directory: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of ``model.safetensors`` or of the shards named by ``model.safetensors.index.json``."""
    single, index = directory / WEIGHTS_NAME, directory / INDEX_NAME
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
    elif single.is_file():
        files = [WEIGHTS_NAME]
    else:
        raise FileNotFoundError(
            f"no {WEIGHTS_NAME} or {INDEX_NAME} in {directory}; write one with model.save_pretrained(dir) or "
            f"`d4rt convert-opend4rt CKPT DIR`"
        )
    state: dict[str, torch.Tensor] = {}
    for name in files:
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is listed in {INDEX_NAME} but missing; copy the whole directory")
        try:
            state.update(load_file(str(path), device=device))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{path} is not a readable safetensors file ({e}); it may be truncated: re-save it") from e
    return state


def load_pretrained(
    directory: str | Path, attention: str | None = None, device: str = "cpu", dtype: torch.dtype | None = torch.float32,
    **config_overrides,
) -> "torch.nn.Module":
    """Load a save_pretrained directory. Names and shapes are checked. The model comes back in ``dtype``
    (float32 unless asked otherwise; ``dtype=None`` keeps the file's dtype, e.g. the bundled float16 weights).

    ``attention``: the attention backend ("sdpa" when None, "eager", "triton"); a run-time choice, never read from
    or written to config.json (an older config.json's "attention" field is ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    config = D4RTConfig.load(directory / CONFIG_NAME)
    if config_overrides:
        config = config.replace(**config_overrides)
    state = read_safetensors(directory, device)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    return load_into(build_empty(config, attention), state, f"checkpoint {directory}").eval()


def random_model(preset: str, seed: int = 0, image_size: int | None = None) -> "torch.nn.Module":
    """A ``preset`` model with seeded random weights (float32, eval), at ``image_size`` when given (no weight
    depends on it): the same seed gives the same weights on any machine, for trying the pipeline without a
    checkpoint and for untrained baselines."""
    from d4rt.models import D4RT

    config = D4RTConfig.preset(preset, **({"image_size": image_size} if image_size else {}))
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return D4RT(config).eval()
    finally:
        torch.random.set_rng_state(generator_state)


def load_or_init(checkpoint: str | Path | None, out_dir: Path, preset: str | None = None, random_init: bool = False,
                 seed: int = 0, image_size: int | None = None):
    """The model to export (float32, eval) and what the manifest records about where it came from.

    With ``random_init`` a seeded random ``preset`` model, saved to out_dir/checkpoint so the torch backend and
    benchmarks load the very same weights.
    """
    from d4rt.checkpoint import load_pretrained, random_model
    from d4rt.runtime.manifest import sha256_file

    if random_init == bool(checkpoint):
        raise ValueError("give either a checkpoint directory or random_init=True with a preset (not both, not neither)")
    if random_init:
        if not preset:
            raise ValueError("random_init needs preset= (tiny, base or g)")
        model = random_model(preset, seed, image_size)
        ckpt = out_dir / "checkpoint"
        model.save_pretrained(ckpt)
        info = {"path": "checkpoint", "random_init": {"preset": preset, "seed": seed}}
    else:
        ckpt = Path(checkpoint)
        model = load_pretrained(ckpt).float().eval()
        info = {"path": str(ckpt.resolve())}
    info["sha256"] = {f.name: sha256_file(f) for f in sorted(ckpt.glob("*.safetensors"))}
    return model, info

