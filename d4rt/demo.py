"""``d4rt demo``: the tiny model end to end on a random clip: encode once, decode a grid of queries, and time
the eager and sdpa attention backends side by side (medians, warm-up excluded)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help="model preset (default: tiny)")
    p.add_argument("--frames", type=int, default=None, help="clip length (default: the preset's num_frames)")
    p.add_argument("--grid", type=int, default=32, help="decode a grid x grid of queries per frame pair")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per backend")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.benchmark import Timer

    from d4rt import D4RT, D4RTConfig

    torch.manual_seed(args.seed)
    cfg = D4RTConfig.preset(args.preset)
    T, S = args.frames or cfg.num_frames, cfg.image_size
    model = D4RT(cfg).eval()
    print(f"D4RT {args.preset}: {model.num_parameters() / 1e6:.2f} M parameters, clip {T} x 3 x {S} x {S}")

    video = torch.rand(1, T, 3, S, S)
    g = torch.linspace(0, 1, args.grid)
    uv = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(1, -1, 2)
    N = uv.shape[1]
    t_src = torch.zeros(1, N, dtype=torch.long)
    t_tgt = torch.full((1, N), T - 1)
    t_cam = torch.full((1, N), T - 1)

    rows = []
    with torch.no_grad():
        for backend in ("eager", "sdpa"):
            model.set_attention(backend)
            memory = model.encode(video, aspect_ratio=16 / 9)
            out = model.decode(memory, video, uv, t_src, t_tgt, t_cam)
            keys, values = model.memory_kv(memory)
            enc = Timer("m.encode(v, 16 / 9)", globals={"m": model, "v": video}).blocked_autorange(min_run_time=0.5)
            dec = Timer(
                "m.decode_kv(k, vv, v, uv, a, b, c)",
                globals={"m": model, "k": keys, "vv": values, "v": video, "uv": uv, "a": t_src, "b": t_tgt, "c": t_cam},
            ).blocked_autorange(min_run_time=0.5)
            rows.append((backend, enc.median * 1e3, dec.median * 1e3))
    print(f"memory {tuple(memory.shape)}; keys/values {tuple(keys.shape)}")
    for name, x in out.items():
        print(f"  {name:13s} {tuple(x.shape)}")
    print(f"\n{'backend':8s} {'encode ms':>10s} {'decode ms (' + str(N) + ' queries)':>26s}")
    for backend, e, d in rows:
        print(f"{backend:8s} {e:10.2f} {d:26.2f}")
    print(f"sdpa / eager speed-up: encode {rows[0][1] / rows[1][1]:.2f}x, decode {rows[0][2] / rows[1][2]:.2f}x (CPU)")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    add_arguments(p)
    raise SystemExit(run(p.parse_args()))
