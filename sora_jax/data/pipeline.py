"""Grain input pipelines: a random-access clip source -> bucketed, sharded, resumable batches.

    source[i] -> per-epoch plan of global batches (shuffle within each (T,H,W) bucket, chunk,
    shuffle the chunks) -> this process's rows of global batch j (`process_index::process_count`)
    -> load + per-example transform (caption choice, bytes -> str) -> stack

The plan is a pure function of (seed, epoch, j), so the dataset is a Grain `MapDataset` indexed by
the global step and its iterator state is just a position: saving and restoring it resumes on
exactly the next batch, on any number of processes. Every process reads the same global batch
index at the same step, so all of them hold clips of the same bucket and a global array can be
formed from their rows; a per-process bucketing buffer could not promise that.
"""

import dataclasses
import functools
from collections.abc import Sequence

import grain
import numpy as np
from absl import logging

_MAX_STEPS = 2**62  # "forever": Grain datasets need a length
_MAX_REPLACEMENT_TRIES = 8


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity for the epoch cache
class BatchPlan:
    """Global batch `j` -> the source indices in it, reshuffled every epoch."""

    bucket_ids: np.ndarray
    global_batch_size: int
    seed: int
    shuffle: bool = True

    def __post_init__(self):
        if self.batches_per_epoch == 0:
            sizes = np.bincount(self.bucket_ids)
            raise ValueError(
                f"no bucket holds a full global batch of {self.global_batch_size} "
                f"(clips per bucket: {sizes.tolist()}): lower the batch size or add clips"
            )

    @functools.cached_property
    def members(self) -> list[np.ndarray]:
        return [np.flatnonzero(self.bucket_ids == b) for b in range(self.bucket_ids.max() + 1)]

    @functools.cached_property
    def batches_per_epoch(self) -> int:
        return sum(len(m) // self.global_batch_size for m in self.members)

    @functools.lru_cache(maxsize=2)  # noqa: B019 - the plan object lives as long as the dataset
    def epoch(self, epoch: int) -> np.ndarray:
        """[batches_per_epoch, global_batch_size] source indices; incomplete batches dropped."""
        rng = np.random.default_rng([self.seed, epoch])
        chunks = []
        for members in self.members:
            order = rng.permutation(members) if self.shuffle else members
            usable = len(order) - len(order) % self.global_batch_size
            chunks.append(order[:usable].reshape(-1, self.global_batch_size))
        batches = np.concatenate(chunks)
        return batches[rng.permutation(len(batches))] if self.shuffle else batches

    def __call__(self, step: int) -> np.ndarray:
        epoch, j = divmod(step, self.batches_per_epoch)
        return self.epoch(epoch)[j]


def make_dataset(
    source,
    *,
    global_batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    detailed_caption_prob: float = 0.0,
) -> grain.MapDataset:
    """Batches of `{"video": uint8 [B,T,H,W,3], "caption": str [B], ...}`, B = global / processes.

    `source` is any Grain random-access source of clip dicts (Shapes World, TFDS, video folder);
    its optional `bucket_ids` attribute says which clips share a (T, H, W) shape.
    """
    if global_batch_size % process_count:
        raise ValueError(
            f"global batch {global_batch_size} not divisible by {process_count} processes"
        )
    bucket_ids = getattr(source, "bucket_ids", None)
    if bucket_ids is None:
        bucket_ids = np.zeros(len(source), np.int32)
    plan = BatchPlan(np.asarray(bucket_ids), global_batch_size, seed, shuffle)
    num_steps = plan.batches_per_epoch * num_epochs if num_epochs else _MAX_STEPS
    loader = _BatchLoader(source, plan, seed, detailed_caption_prob, process_index, process_count)
    return grain.MapDataset.range(num_steps).map(loader)


@dataclasses.dataclass
class _BatchLoader:
    """Loads and stacks one process's rows of a global batch."""

    source: object
    plan: BatchPlan
    seed: int
    detailed_caption_prob: float
    process_index: int
    process_count: int

    def __call__(self, step: int) -> dict:
        indices = self.plan(step)[self.process_index :: self.process_count]
        examples = [self._load(int(i), step) for i in indices]
        return {key: _stack([ex[key] for ex in examples]) for key in examples[0]}

    def _load(self, index: int, step: int) -> dict:
        example = self.source[index]
        tries = 0
        while "skipped" in example:
            # Unreadable at load time (the scan counted what it could see up front): take a
            # deterministic stand-in from the same bucket so the batch keeps its shape.
            logging.warning("skipping %s: %s", example.get("file", index), example["skipped"])
            tries += 1
            if tries > _MAX_REPLACEMENT_TRIES:
                raise RuntimeError(f"{tries} unreadable clips in a row near index {index}")
            members = self.plan.members[self.plan.bucket_ids[index]]
            index = int(np.random.default_rng([self.seed, step, index]).choice(members))
            example = self.source[index]
        return self._transform(example, index, step)

    def _transform(self, example: dict, index: int, step: int) -> dict:
        return transform(example, index, step, self.seed, self.detailed_caption_prob)


def transform(example: dict, index: int, step: int, seed: int, detailed_caption_prob: float):
    """Per-example: bytes -> str, and the caption is the detailed one with the given
    probability (a pure function of seed, step and index)."""
    out = {k: v.decode() if isinstance(v, bytes) else v for k, v in example.items()}
    if "detailed_caption" in out:
        rng = np.random.default_rng([seed, step, index, 2])
        if rng.random() < detailed_caption_prob:
            out["caption"] = out["detailed_caption"]
        del out["detailed_caption"]
    out.setdefault("index", index)
    return out


def _stack(values: Sequence):
    if isinstance(values[0], str):
        return np.asarray(values, dtype=object)
    return np.stack(values)
