"""Import OpenD4RT's released checkpoints (``opend4rt.ckpt``, a ``torch.save`` pickle) into this package.

Our module names equal OpenD4RT's state-dict keys, so the import is: read the file safely, find the state dict,
derive the architecture from the tensor shapes, check every name and shape, assign. Nothing is renamed, split or
merged (the packed q/k/v projections stay packed).

Reading. ``torch.load(map_location="cpu", weights_only=True, mmap=True)``: a checkpoint is untrusted input, so a
pickle that needs more than tensors and plain containers is refused; ``mmap`` maps the file instead of reading it,
and the model's parameters are those mapped tensors (``load_state_dict(assign=True)``), so the 4.6 GB of the g
model are never held twice. Files in the legacy (pre-zip) format cannot be mapped and are read into memory.

Finding the state dict. The top-level dict itself, or the dict under the first of ``state_dict``, ``model``,
``module``, ``network``, ``net``; a ``module.`` prefix (DataParallel / DDP) is stripped from every key.

The architecture. Every width, depth, MLP size, the tubelet, the number of frames (the time tables), the Fourier
bands and the RGB patch side come from tensor shapes, each by a majority vote over every tensor that carries it
(one damaged tensor is then reported as mis-shaped instead of changing the model). Two sizes are not in any shape:
- attention heads, taken from (first that applies): the caller (``enc_heads=`` / ``--enc-heads``); the
  ``model.yaml`` beside the checkpoint (``model.encoder.num_heads``, ``model.decoder.num_heads``); the g preset's
  16 heads when the width is g's (1408 -> 16 x 88, 1280 -> 16 x 80); otherwise heads of 64 channels, with a
  warning, since a wrong head count loads without error but computes something else;
- the input size: the caller, else ``model.input.image_size`` of ``model.yaml``, else 256 (all OpenD4RT releases).
Where no tensor carries a size at all (the tensor is missing), the g preset's value stands in so that the
structural check below names the missing tensor. When ``model.yaml`` is present, its widths, depths and clip
length must agree with the tensors.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from d4rt.checkpoint import build_empty, load_into, save_pretrained
from d4rt.config import PRESETS, D4RTConfig

WRAPPER_KEYS = ("state_dict", "model", "module", "network", "net")
PREFIX = "module."
CHECKPOINT_NAME = "opend4rt.ckpt"  # the file name inside each release folder
YAML_NAME = "model.yaml"
DEFAULT_IMAGE_SIZE = 256
FALLBACK_HEAD_DIM = 64

Shapes = Mapping[str, tuple[int, ...]]


# ----- reading ----------------------------------------------------------------------------------------------------
def _resolve(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir() and (path / CHECKPOINT_NAME).is_file():
        return path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no OpenD4RT checkpoint at {path}: expected the release's {CHECKPOINT_NAME} file (or its folder)"
        )
    return path


def _unreadable(path: Path, detail: str) -> ValueError:
    return ValueError(
        f"{path} is not a readable torch checkpoint ({detail}); it may be truncated or corrupt: download it again "
        f"and compare its size with the release's"
    )


def _torch_load(path: Path) -> Any:
    """torch.load with weights_only=True, memory-mapped where the format allows; clear errors for bad files."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap can only be used" not in str(e):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy format: read, not mapped
    except pickle.UnpicklingError as e:
        detail = str(e).split("WeightsUnpickler error:")[-1].strip()
        what = re.split(r" was not an allowed global|\n", detail)[0] if detail else type(e).__name__
        if what.startswith("Unsupported operand"):  # not a pickle at all: garbage or a damaged file
            raise _unreadable(path, what) from e
        raise ValueError(
            f"{path} needs arbitrary unpickling ({what}); a checkpoint may hold only tensors and plain containers, "
            f"because unpickling anything else can run code. If you trust the file, save its state dict alone "
            f"(torch.save(ckpt['state_dict'], 'weights.pt') after torch.load(..., weights_only=False)) and "
            f"convert that"
        ) from e
    except (RuntimeError, EOFError, KeyError, OSError, ValueError) as e:
        raise _unreadable(path, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}") from e


def find_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint (top level or under a wrapper key), ``module.`` stripped."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source} holds a {type(obj).__name__}, expected a dict of tensors (a state dict)")
    for key in WRAPPER_KEYS:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    not_tensors = sorted(str(k) for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor)))
    if not_tensors or not obj:
        raise ValueError(
            f"{source} has no state dict: expected a dict of tensors at the top level or under one of "
            f"{list(WRAPPER_KEYS)}; found entries that are not tensors: {not_tensors[:10] or 'none (empty)'}"
        )
    return {k.removeprefix(PREFIX): v for k, v in obj.items()}


def read_model_yaml(path: str | Path) -> dict[str, Any]:
    """The ``model.yaml`` of a release, safely parsed (no Python objects)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML ({e}); use the model.yaml of the release, or remove it") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, expected the release's model.yaml mapping")
    return data


# ----- the architecture from the shapes ---------------------------------------------------------------------------
def _vote(votes: list[int], fallback: int) -> int:
    """The most common value (ties: the first seen), or ``fallback`` when no tensor carries it."""
    return Counter(votes).most_common(1)[0][0] if votes else fallback


def _depth(shapes: Shapes, prefix: str, fallback: int) -> int:
    indices = [int(m.group(1)) for k in shapes if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))]
    return max(indices) + 1 if indices else fallback


def _dims(shapes: Shapes, pattern: str, axis: int) -> list[int]:
    """Size ``axis`` of every tensor whose name matches ``pattern`` (a full-match regex) and has that axis."""
    rx = re.compile(pattern)
    return [s[axis] for k, s in shapes.items() if rx.fullmatch(k) and len(s) > axis]


def _inverse(n: int, f, lo: int, hi: int) -> int | None:
    """The x in [lo, hi] with f(x) == n, if any."""
    return next((x for x in range(lo, hi + 1) if f(x) == n), None)


def _heads(width: int, given: int | None, from_yaml: int | None, g_width: int, g_heads: int, what: str):
    """(heads, where they came from) by the rule in the module docstring."""
    if given is not None:
        return given, "argument"
    if from_yaml is not None:
        return int(from_yaml), YAML_NAME
    if width == g_width:
        return g_heads, "g preset"
    if width % FALLBACK_HEAD_DIM == 0:
        warnings.warn(
            f"the {what} width {width} is not the g preset's and no {YAML_NAME} gives its heads: assuming heads of "
            f"{FALLBACK_HEAD_DIM} channels ({width // FALLBACK_HEAD_DIM} heads). If that is wrong the model loads "
            f"but computes something else: pass the right count ({what}_heads= / --{what[:3]}-heads)",
            stacklevel=3,
        )
        return width // FALLBACK_HEAD_DIM, f"head_dim {FALLBACK_HEAD_DIM} rule"
    raise ValueError(
        f"cannot tell the {what}'s attention heads: width {width} is not the g preset's and not a multiple of "
        f"{FALLBACK_HEAD_DIM}, and no {YAML_NAME} is beside the checkpoint; pass {what}_heads= / --{what[:3]}-heads"
    )


def config_from_shapes(
    shapes: Shapes,
    model_yaml: Mapping[str, Any] | None = None,
    enc_heads: int | None = None,
    dec_heads: int | None = None,
    image_size: int | None = None,
) -> D4RTConfig:
    """The D4RTConfig of an OpenD4RT state dict, from its tensor names and shapes (see the module docstring).

    Args:
        shapes: tensor name -> shape, ``module.`` already stripped.
        model_yaml: the release's model.yaml (``{"model": {...}}``), if present; gives heads and input size.
    """
    g = PRESETS["g"]
    E = r"encoder\.blocks\.\d+\."
    D = r"decoder\.blocks\.\d+\."
    enc_dim = _vote(
        _dims(shapes, r"encoder\.patch_embed\.weight|encoder\.final_norm\.weight|aspect_ratio_proj\.[02]\.weight", 0)
        + _dims(shapes, E + r"(norm_attn|norm_ff)\.weight|" + E + r"attn\.out_proj\.weight", 0)
        + _dims(shapes, r"memory_proj\.weight", 1),
        g["enc_dim"],
    )
    dec_dim = _vote(
        _dims(shapes, r"memory_proj\.weight|query_embedder\.(uv_proj|patch_proj\.[02])\.weight", 0)
        + _dims(shapes, r"query_embedder\.t_(src|tgt|cam)_embed\.weight|heads\.\w+_head\.weight", 1)
        + _dims(shapes, D + r"(norm_q|norm_kv|norm_ff)\.weight|" + D + r"cross_attn\.out_proj\.weight", 0),
        g["dec_dim"],
    )
    patch = shapes.get("encoder.patch_embed.weight")
    tubelet = tuple(patch[2:]) if patch is not None and len(patch) == 5 else g["tubelet"]
    uv_in = _vote(_dims(shapes, r"query_embedder\.uv_proj\.weight", 1), 34)
    rgb_in = _vote(_dims(shapes, r"query_embedder\.patch_proj\.0\.weight", 1), 243)
    bands = _inverse(uv_in, lambda b: 2 * (1 + 2 * b), 0, 64)
    rgb_patch = _inverse(rgb_in, lambda p: 3 * p * p, 1, 99)
    yaml_model = (model_yaml or {}).get("model", {}) or {}
    if not isinstance(yaml_model, Mapping):
        raise ValueError(f"{YAML_NAME}'s 'model' entry is a {type(yaml_model).__name__}, expected a mapping")
    yaml_enc, yaml_dec = yaml_model.get("encoder", {}) or {}, yaml_model.get("decoder", {}) or {}
    yaml_input = yaml_model.get("input", {}) or {}
    sizes = dict(
        num_frames=_vote(_dims(shapes, r"query_embedder\.t_(src|tgt|cam)_embed\.weight", 0), g["num_frames"]),
        tubelet=tubelet,
        enc_dim=enc_dim,
        enc_depth=_depth(shapes, "encoder.blocks.", g["enc_depth"]),
        enc_mlp_dim=_vote(_dims(shapes, E + r"ff\.0\.weight", 0), g["enc_mlp_dim"]),
        dec_dim=dec_dim,
        dec_depth=_depth(shapes, "decoder.blocks.", g["dec_depth"]),
        dec_mlp_dim=_vote(_dims(shapes, D + r"ff\.0\.weight", 0), g["dec_mlp_dim"]),
        fourier_bands=8 if bands is None else bands,  # an impossible size: the check reports the tensor
        rgb_patch=9 if rgb_patch is None or rgb_patch % 2 == 0 else rgb_patch,
    )
    if model_yaml:
        _check_yaml_agrees(sizes, yaml_model)
    yaml_size = yaml_input.get("image_size")
    if image_size is None and yaml_size is not None:
        h, w = (yaml_size, yaml_size) if isinstance(yaml_size, int) else yaml_size
        if h != w:
            raise ValueError(f"{YAML_NAME} gives image_size {yaml_size}; this package supports square inputs only")
        image_size = int(h)
    enc_heads, enc_from = _heads(enc_dim, enc_heads, yaml_enc.get("num_heads"), g["enc_dim"], g["enc_heads"], "encoder")
    dec_heads, dec_from = _heads(dec_dim, dec_heads, yaml_dec.get("num_heads"), g["dec_dim"], g["dec_heads"], "decoder")
    architecture = {**sizes, "enc_heads": enc_heads, "dec_heads": dec_heads}
    architecture["image_size"] = image_size or DEFAULT_IMAGE_SIZE
    is_g = all(architecture[k] == v for k, v in g.items() if k != "num_frames")
    return D4RTConfig(
        name="g" if is_g else "custom",
        **architecture,
        extra={"opend4rt": {"enc_heads_from": enc_from, "dec_heads_from": dec_from}},
    )


def _check_yaml_agrees(sizes: dict[str, Any], yaml_model: Mapping[str, Any]) -> None:
    """The sizes model.yaml states must be the tensors' (else the yaml belongs to another checkpoint)."""
    enc, dec, inp = (yaml_model.get(k, {}) or {} for k in ("encoder", "decoder", "input"))
    stated = {
        "enc_dim": enc.get("hidden_dim"), "enc_depth": enc.get("num_layers"),
        "dec_dim": dec.get("hidden_dim"), "dec_depth": dec.get("num_layers"),
        "num_frames": inp.get("clip_frames"),
        "tubelet": tuple(enc["patch_size_t_h_w"]) if enc.get("patch_size_t_h_w") else None,
    }  # fmt: skip
    wrong = [
        f"{k}: {v} in {YAML_NAME}, {sizes[k]} in the tensors"
        for k, v in stated.items()
        if v is not None and v != sizes[k]
    ]
    if wrong:
        raise ValueError(
            f"{YAML_NAME} does not describe this checkpoint ({'; '.join(wrong)}); put the release's own "
            f"{YAML_NAME} beside it, or remove it and pass --enc-heads / --dec-heads"
        )


# ----- the public API ---------------------------------------------------------------------------------------------
def load_opend4rt(
    path: str | Path,
    attention: str | None = None,
    enc_heads: int | None = None,
    dec_heads: int | None = None,
    image_size: int | None = None,
    model_yaml: str | Path | None = None,
) -> torch.nn.Module:
    """Load an OpenD4RT checkpoint as a :class:`d4rt.D4RT` in eval mode (weights in the file's dtype, on the CPU).

    Args:
        path: ``opend4rt.ckpt`` or the release folder holding it.
        attention: "eager" | "sdpa" (default) | "triton".
        enc_heads, dec_heads, image_size: sizes no tensor carries (see the module docstring for the defaults).
        model_yaml: the release's model.yaml; by default the one beside the checkpoint, if any.
    Raises:
        FileNotFoundError: no such file. ValueError: unreadable file, a pickle that needs more than tensors, no
            state dict, or tensors that do not match the derived model (missing / unexpected / mis-shaped listed).
    """
    ckpt = _resolve(path)
    yaml_path = Path(model_yaml) if model_yaml is not None else ckpt.parent / YAML_NAME
    if model_yaml is not None and not yaml_path.is_file():
        raise FileNotFoundError(f"no {YAML_NAME} at {yaml_path}")
    yaml_data = read_model_yaml(yaml_path) if yaml_path.is_file() else None
    state = find_state_dict(_torch_load(ckpt), str(ckpt))
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    config = config_from_shapes(shapes, yaml_data, enc_heads, dec_heads, image_size)
    config.extra["opend4rt"]["checkpoint"] = ckpt.name
    return load_into(build_empty(config, attention), state, f"OpenD4RT checkpoint {ckpt}").eval()


def convert_opend4rt(ckpt: str | Path, out_dir: str | Path, **load_options: Any) -> Path:
    """Load an OpenD4RT checkpoint (:func:`load_opend4rt` options) and write the save_pretrained form:
    ``config.json`` + safetensors, sharded above 2 GB. Returns ``out_dir``."""
    return save_pretrained(load_opend4rt(ckpt, **load_options), out_dir)
