"""``d4rt memory-plan``: what the two engines need in memory, and the largest query batch each device can take.

Every number is computed from the config (weights counted on the meta device); only the devices' capacities and
the memory kept back for the system (``DEVICES``) are inputs. Activations are estimates: the largest set of
tensors alive at once in one block, at batch 1, assuming the engine reuses activation memory between layers.
"Fused" attention never materialises the score matrix (flash attention: TensorRT's fused MHA, sdpa, our Triton
kernels); "unfused" holds the scores and the probabilities, H x Nq x Nk each.

    d4rt memory-plan --preset g --frames 48 [--bytes 2] [--json plan.json]
"""

from __future__ import annotations

from dataclasses import dataclass

GiB = 1024**3
QUERY_BATCHES = (1, 4096, 65536)
INPUT_BYTES = 4  # float32 / int32 graph inputs (video, uv, t) and outputs
INDEX_BYTES = 8  # int64 gather indices of the RGB patch sampler


@dataclass(frozen=True)
class Device:
    name: str
    memory_gib: float  # what the GPU can address (Jetson: the unified memory shared with the CPU)
    reserved_gib: float  # kept back: OS and desktop (Jetson), CUDA context, TensorRT runtime, the application


DEVICES = (
    Device("Jetson Orin Nano 8 GB", 8.0, 2.0),
    Device("Jetson AGX Orin 32 GB", 32.0, 3.0),
    Device("Jetson AGX Orin 64 GB", 64.0, 3.0),
    Device("H200 141 GB", 143771 / 1024, 1.5),  # nvidia-smi: 143771 MiB
)


def graph_parameters(config) -> dict[str, int]:
    """Parameters of each deployed graph (meta device, nothing allocated).

    The encoder graph holds the encoder, the aspect-ratio MLP, memory_proj and each decoder block's norm_kv and K/V
    rows of its packed projection; the decoder graph holds everything else.
    """
    from d4rt.checkpoint import build_empty

    counts = {"encoder graph": 0, "decoder graph": 0}
    for name, p in build_empty(config).named_parameters():
        if name.startswith(("encoder.", "aspect_ratio_proj.", "memory_proj.")) or ".norm_kv." in name:
            counts["encoder graph"] += p.numel()
        elif ".cross_attn.in_proj_" in name:  # rows q | k | v: q is the decoder's, k and v the encoder's
            counts["encoder graph"] += p.numel() * 2 // 3
            counts["decoder graph"] += p.numel() // 3
        else:
            counts["decoder graph"] += p.numel()
    return counts


def clip_bytes(config, frames: int, value_bytes: int) -> dict[str, int]:
    """Per-clip memory: the video input and every decoder block's keys and values [L, 1, H, M, Dh]."""
    M = config.memory_tokens(frames)
    return {
        "video": frames * 3 * config.image_size**2 * INPUT_BYTES,
        "keys + values": 2 * config.dec_depth * config.dec_heads * M * config.dec_head_dim * value_bytes,
    }


def encoder_activation_bytes(config, frames: int, value_bytes: int, fused: bool) -> int:
    """Peak of one encoder block over its phases (global blocks are the worst: all M tokens attend together).

    attention: residual x + qkv [M, 3C] + (fused) output [M, C] | (unfused) scores + probabilities [H, M, M];
    MLP: x + LN(x) + hidden + GELU(hidden) [M, mlp]; the end: memory [M, D] + one block's K/V projection [M, 2D].
    """
    M, C, D = config.memory_tokens(frames), config.enc_dim, config.dec_dim
    attention = M * C + 3 * M * C + (M * C if fused else 2 * config.enc_heads * M * M)
    mlp = 2 * M * C + 2 * M * config.enc_mlp_dim
    kv = M * D + 2 * M * D
    return max(attention, mlp, kv) * value_bytes


def decoder_bytes_per_query(config, frames: int, value_bytes: int, fused: bool) -> int:
    """Peak bytes per query of the decoder graph over its phases (each query is independent, so memory is linear
    in the batch).

    embedding: uv and t inputs, the RGB patch (4 gathered corners + one int64 index tensor + the result, each
    3 x p x p) and the uv, time and patch terms [D] each; a block: x + LN(x) + q + (fused) output | (unfused) scores +
    probabilities [H, M]; MLP: x + LN(x) + hidden + GELU(hidden); outputs 13 values.
    """
    D, M, H = config.dec_dim, config.memory_tokens(frames), config.dec_heads
    patch = 3 * config.rgb_patch**2
    inputs = (2 + 3) * INPUT_BYTES
    embedding = patch * (4 * INPUT_BYTES + INDEX_BYTES + INPUT_BYTES) + 4 * D * value_bytes
    attention = (3 * D + (D if fused else 2 * H * M)) * value_bytes
    mlp = (2 * D + 2 * config.dec_mlp_dim) * value_bytes
    outputs = 13 * INPUT_BYTES
    return inputs + outputs + max(embedding, attention, mlp)


def plan(config, frames: int, value_bytes: int = 2, devices=DEVICES, batches=QUERY_BATCHES) -> dict:
    """The whole plan as plain numbers (bytes), for the table and for JSON."""
    params = graph_parameters(config)
    weights = {k: v * value_bytes for k, v in params.items()}
    clip = clip_bytes(config, frames, value_bytes)
    result = {
        "config": config.name, "frames": frames, "bytes_per_value": value_bytes,
        "memory_tokens": config.memory_tokens(frames), "parameters": params, "weights": weights, "clip": clip,
        "attention": {},
    }  # fmt: skip
    for mode in ("fused", "unfused"):
        fused = mode == "fused"
        encoder = encoder_activation_bytes(config, frames, value_bytes, fused)
        per_query = decoder_bytes_per_query(config, frames, value_bytes, fused)
        fixed = sum(weights.values()) + sum(clip.values()) + encoder  # both engines and their contexts resident
        rows = []
        for d in devices:
            free = d.memory_gib * GiB - d.reserved_gib * GiB - fixed
            largest = max(0, int(free // per_query))
            rows.append({
                "device": d.name, "memory_gib": d.memory_gib, "reserved_gib": d.reserved_gib,
                "fixed_bytes": fixed, "free_bytes": free, "largest_query_batch": largest,
                "fits": {n: fixed + n * per_query <= (d.memory_gib - d.reserved_gib) * GiB for n in batches},
            })  # fmt: skip
        result["attention"][mode] = {
            "encoder_activation_peak": encoder,
            "decoder_bytes_per_query": per_query,
            "query_batches": {n: n * per_query for n in batches},
            "devices": rows,
        }
    return result


def format_plan(p: dict) -> str:
    W = 52

    def row(item: str, value: float, unit: str = "GiB") -> str:
        scale = {"GiB": GiB, "MiB": 1024**2, "KiB": 1024}[unit]
        return f"{item:{W}s} {value / scale:10.3f} {unit}"

    attention = p["attention"]
    title = (
        f"D4RT {p['config']}, {p['frames']} frames, {p['bytes_per_value']}-byte weights and activations; "
        f"M = {p['memory_tokens']} memory tokens"
    )
    lines = [title, ""]
    for graph, n in p["parameters"].items():
        lines.append(row(f"weights, {graph} ({n:,} parameters)", p["weights"][graph]))
    lines.append(row("video input (float32)", p["clip"]["video"]))
    lines.append(row("keys + values of all decoder blocks, per clip", p["clip"]["keys + values"]))
    for mode, a in attention.items():
        lines.append(row(f"encoder activation peak, {mode} attention", a["encoder_activation_peak"]))
    for mode, a in attention.items():
        lines.append(row(f"decoder, per query, {mode} attention", a["decoder_bytes_per_query"], "KiB"))
        for n, b in a["query_batches"].items():
            if n > 1:
                lines.append(row(f"  decoder, batch of {n:,} queries", b))
    batches = list(next(iter(attention.values()))["query_batches"])
    for mode, a in attention.items():
        lines += ["", f"{mode} attention, both engines loaded:"]
        head = "".join(f"{'N=' + str(n):>9s}" for n in batches)
        lines.append(f"  {'device':24s} {'usable GiB':>10s} {'fixed GiB':>10s} {'largest N':>11s}{head}")
        for r in a["devices"]:
            fits = "".join(f"{'fits' if r['fits'][n] else 'no':>9s}" for n in batches)
            usable, fixed = r["memory_gib"] - r["reserved_gib"], r["fixed_bytes"] / GiB
            lines.append(f"  {r['device']:24s} {usable:10.1f} {fixed:10.2f} {r['largest_query_batch']:>11,}{fits}")
    reserved = ", ".join(f"{r['device']} {r['reserved_gib']}" for r in next(iter(attention.values()))["devices"])
    lines += [
        "",
        "fixed = both graphs' weights + video + keys/values + the encoder's activation peak;",
        f"usable = device memory - reserved for OS / CUDA / TensorRT / the app (GiB: {reserved}).",
    ]
    return "\n".join(lines)
