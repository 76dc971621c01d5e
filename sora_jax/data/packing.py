"""NaViT-style sequence packing: clips of any (T, H, W), images included, share fixed-length rows.

Bucketing (`pipeline.py`) batches clips of one shape together; packing instead fills each row of
`seq_len` tokens with whole clips of different shapes (Dehghani et al. 2023, "Patch n' Pack").
Every token carries its clip's segment id (1..S; 0 = padding), so attention never crosses clips
(`blockwise_attention.segment_mask`), each clip attends to its own caption (text segments),
draws its own timestep and guidance dropout, and the loss averages over real, noisy tokens only.

    PackPlan: per-epoch plan of global batches -> rows -> clip indices (pure in (seed, epoch, j))
    make_packed_dataset: Grain MapDataset of this process's rows: lists of clip examples
    pack_row: clips (+ drawn tasks) -> one row of tokens, coordinates, segments, conditioning

A clip's budget in a row is its tokens plus the tail tokens its task may append (`tasks.py`).
"""

import dataclasses
import functools

import grain
import numpy as np

from sora_jax import tasks
from sora_jax.data import pipeline
from sora_jax.models import patching

_MAX_STEPS = 2**62


def clip_tokens(latent_shape: tuple[int, ...], patch: tuple[int, int, int]) -> int:
    """Tokens of one clip latent [t, h, w, c]."""
    return int(np.prod(patching.grid_shape((1, *latent_shape), patch)))


@dataclasses.dataclass(frozen=True, eq=False)
class PackPlan:
    """Global batch j -> `rows` rows of clip indices, each row's budgets summing to <= seq_len.

    Clips are shuffled each epoch and placed next-fit: a row is closed when the next clip does
    not fit or it holds `max_clips`; rows are grouped `rows` at a time, the last group of an
    epoch dropped if incomplete.
    """

    budgets: np.ndarray  # per clip: its tokens + the most tail tokens it may carry
    seq_len: int
    max_clips: int
    rows: int
    seed: int

    def __post_init__(self):
        if self.budgets.max() > self.seq_len:
            raise ValueError(
                f"a clip needs {int(self.budgets.max())} tokens, more than seq_len {self.seq_len}"
            )
        if self.batches_per_epoch == 0:
            raise ValueError(f"the clips do not fill one batch of {self.rows} packed rows")

    @functools.lru_cache(maxsize=2)  # noqa: B019 - the plan lives as long as the dataset
    def epoch(self, epoch: int) -> list[list[list[int]]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.budgets))
        rows, row, used = [], [], 0
        for i in order:
            if row and (used + self.budgets[i] > self.seq_len or len(row) == self.max_clips):
                rows.append(row)
                row, used = [], 0
            row.append(int(i))
            used += int(self.budgets[i])
        rows.append(row)
        usable = len(rows) - len(rows) % self.rows
        return [rows[j : j + self.rows] for j in range(0, usable, self.rows)]

    @functools.cached_property
    def batches_per_epoch(self) -> int:
        return len(self.epoch(0))

    def __call__(self, step: int) -> list[list[int]]:
        epoch, j = divmod(step, self.batches_per_epoch)
        return self.epoch(epoch)[j]


def budgets(latent_shapes, patch, longest_tail: int) -> np.ndarray:
    """Each clip's tokens plus the tail tokens its task may append (latent shapes [t, h, w, c])."""
    out = []
    for shape in latent_shapes:
        tail = min(longest_tail, shape[0] - 1)
        out.append(clip_tokens(shape, patch) + clip_tokens((tail, *shape[1:]), patch) * (tail > 0))
    return np.asarray(out, np.int64)


def make_packed_dataset(
    source,
    plan: PackPlan,
    *,
    process_index: int = 0,
    process_count: int = 1,
    detailed_caption_prob: float = 0.0,
) -> grain.MapDataset:
    """Step -> this process's rows of the global batch: a list of rows, each a list of clips."""
    if plan.rows % process_count:
        raise ValueError(f"{plan.rows} rows are not divisible by {process_count} processes")

    def load(step: int):
        rows = plan(step)[process_index::process_count]
        return [
            [pipeline.transform(source[i], i, step, plan.seed, detailed_caption_prob) for i in row]
            for row in rows
        ]

    return grain.MapDataset.range(_MAX_STEPS).map(load)


def pack_row(clips, task_names, *, patch, seq_len: int, max_clips: int, context: int) -> dict:
    """One packed row from clip examples ("latent" [t, h, w, c] raw, optional "tail<k>").

    Each clip's tokens come first, then the tail tokens its task appends (clean, at the time
    coordinates of the frames they show), then the next clip. Returns numpy arrays:
    tokens [L, P] (raw latent patches), coords [L, 3], segments [L] int32, cond [L] bool (head
    and tail conditioning), clip_tokens [S] (each clip's own token count, for its timestep
    shift; 0 for unused slots).
    """
    if len(clips) > max_clips:
        raise ValueError(f"{len(clips)} clips exceed max_clips {max_clips}")
    width = int(np.prod(patch)) * clips[0]["latent"].shape[-1]
    row = {
        "tokens": np.zeros((seq_len, width), np.float32),
        "coords": np.zeros((seq_len, 3), np.float32),
        "segments": np.zeros(seq_len, np.int32),
        "cond": np.zeros(seq_len, bool),
        "clip_tokens": np.zeros(max_clips, np.int32),
    }
    at = 0
    for s, (clip, task) in enumerate(zip(clips, task_names, strict=True)):
        latent = clip["latent"][None]
        head, tail = tasks.layout(task, context)
        t = latent.shape[1]
        if head + tail >= t:
            head, tail = 0, 0  # too short (an image): plain text-to-video
        grid = patching.grid_shape(latent.shape, patch)
        pieces = [(latent, patching.grid_coords(grid, 1)[0], np.arange(t) < head)]
        if tail:
            tail_latent = clip[f"tail{tail}"][None]
            tail_grid = patching.grid_shape(tail_latent.shape, patch)
            coords = np.array(patching.grid_coords(tail_grid, 1)[0])
            coords[:, 0] += t - tail
            pieces.append((tail_latent, coords, np.ones(tail, bool)))
        row["clip_tokens"][s] = int(np.prod(grid))
        for piece, coords, cond_frames in pieces:
            tokens = np.asarray(patching.patchify(piece, patch))[0]
            n = len(tokens)
            if at + n > seq_len:
                raise ValueError(f"the clips need more than seq_len {seq_len} tokens")
            piece_grid = patching.grid_shape(piece.shape, patch)
            cond = np.asarray(patching.frame_mask_to_tokens(cond_frames[None], piece_grid, patch))
            row["tokens"][at : at + n] = tokens
            row["coords"][at : at + n] = coords
            row["segments"][at : at + n] = s + 1
            row["cond"][at : at + n] = cond[0]
            at += n
    return row


def pack_batch(rows, task_rows, *, patch, seq_len: int, max_clips: int, context: int) -> dict:
    """`pack_row` for each row (its clips take the first of its task names), stacked, plus
    "captions": each row's clips' captions (a list per row, for `dit_lib.packed_text_fields`).
    """
    packed = [
        pack_row(r, t[: len(r)], patch=patch, seq_len=seq_len, max_clips=max_clips, context=context)
        for r, t in zip(rows, task_rows, strict=True)
    ]
    batch = {k: np.stack([p[k] for p in packed]) for k in packed[0]}
    batch["captions"] = [[c["caption"] for c in row] for row in rows]
    return batch
