"""Lightning DataModule over clip folders (``*.npz`` written by :func:`d4rt.data.synthetic.write_clip`)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from d4rt.data.dataset import D4RTDataset


def find_clips(path: str | Path) -> list[Path]:
    """The clip files of a folder (sorted ``*.npz``) or a single clip file."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no clip folder or file at {path}; generate clips with --synthetic N")
    clips = sorted(path.glob("*.npz"))
    if not clips:
        raise FileNotFoundError(f"{path} holds no *.npz clips; generate some with --synthetic N")
    return clips


class D4RTDataModule(L.LightningDataModule):
    """Training clips get fresh queries every time they are drawn (``depth_fraction`` of them pure depth queries,
    see :func:`d4rt.data.dataset.sample_queries`); validation clips get the paper's sampling with the same queries
    every epoch (seeded by clip index), so validation curves compare like with like."""

    def __init__(
        self,
        train_clips: list[Path],
        val_clips: list[Path] | None,
        num_frames: int,
        image_size: int,
        num_queries: int = 2048,
        batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        depth_fraction: float = 0.0,
    ):
        super().__init__()
        self.train_clips, self.val_clips = list(train_clips), list(val_clips or [])
        self.kw = dict(num_frames=num_frames, image_size=image_size, num_queries=num_queries)
        self.depth_fraction = float(depth_fraction)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed

    def train_dataloader(self) -> DataLoader:
        dataset = D4RTDataset(self.train_clips, seed=self.seed, depth_fraction=self.depth_fraction, **self.kw)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=len(dataset) >= self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_clips:
            return []
        dataset = D4RTDataset(self.val_clips, seed=self.seed + 1, fixed_queries=True, **self.kw)
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers)
