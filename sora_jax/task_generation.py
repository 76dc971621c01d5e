"""Every generation task from one trained run, in pixels: what is given, what comes back.

Each function takes a `dit_lib.Pipeline`, B prompts and uint8 frames [B, T, H, W, 3] (an image
is one frame), and returns the finished uint8 videos [B, T', H, W, 3], given frames included
where the task keeps them. The conditioning itself (head frames in place, tail frames appended)
is `tasks.py`; `sample` holds the sampler settings: dict(steps=..., cfg=..., seed=..., sampler=...),
the seed an int for the batch or one a prompt (`Pipeline.generate`).

`context` is the run's `config.tasks.context` (latent frames); an extension overlaps the given
video by `1 + r (context - 1)` pixel frames, r being the VAE's temporal factor.
"""

import numpy as np
from tqdm import tqdm

from sora_jax import tasks

WINDOW_SEED_STRIDE = 1_000_000  # a long video's window i samples with seed + i * this


def context_frames(pipe) -> int:
    """Pixel frames an extension continues from (the head or tail it is given)."""
    return tasks.pixel_frames(pipe.config.tasks.context, pipe.vae.temporal_factor)


def text_to_video(pipe, prompts, *, frames, height, width, sample):
    """Text to video; `frames=1` is text to image."""
    return pipe.generate(prompts, frames=frames, height=height, width=width, **sample)


def image_to_video(pipe, prompts, images, *, frames, sample):
    """Animates `images` [B, H, W, 3]: each is its video's first frame."""
    _, h, w, _ = images.shape
    return pipe.generate(
        prompts, frames=frames, height=h, width=w, head_video=images[:, None], **sample
    )


def extend(pipe, prompts, videos, *, direction, frames, sample):
    """Continues `videos` forward (new frames after them) or backward (new frames before).

    The new clip of `frames` frames overlaps each video by `context_frames` frames, which are
    given; the result is the video with `frames - context_frames` new frames joined on.
    """
    overlap = context_frames(pipe)
    _check_length(videos, overlap, "video to extend")
    _, _, h, w, _ = videos.shape
    size = dict(frames=frames, height=h, width=w)
    if direction == "forward":
        clips = pipe.generate(prompts, **size, head_video=videos[:, -overlap:], **sample)
        return np.concatenate([videos, clips[:, overlap:]], axis=1)
    if direction == "backward":
        clips = pipe.generate(prompts, **size, tail_video=videos[:, :overlap], **sample)
        return np.concatenate([clips[:, :-overlap], videos], axis=1)
    raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")


def interpolate(pipe, prompts, starts, ends, *, frames, sample):
    """Connects `starts` to `ends` (videos [B, T, H, W, 3]; images are 1-frame videos).

    A clip of `frames` frames starts on a start's last frame and ends on its end's first; the
    result is start, the frames between, then end.
    """
    if starts.shape[2:] != ends.shape[2:]:
        raise ValueError(f"start and end differ in size: {starts.shape[2:]} vs {ends.shape[2:]}")
    _, _, h, w, _ = starts.shape
    clips = pipe.generate(
        prompts, frames=frames, height=h, width=w,
        head_video=starts[:, -1:], tail_video=ends[:, :1], **sample,
    )  # fmt: skip
    return np.concatenate([starts[:, :-1], clips, ends[:, 1:]], axis=1)


def loop(pipe, prompts, *, frames, height, width, sample, images=None):
    """Seamless loops: clips that start and end on the same frame, that last frame dropped.

    The frame is `images` [B, H, W, 3] or, without them, the first frame of text-to-video samples.
    """
    if images is None:
        size = dict(frames=frames, height=height, width=width)
        images = text_to_video(pipe, prompts, **size, sample=sample)[:, 0]
    ends = images[:, None]
    return interpolate(pipe, prompts, ends, ends, frames=frames, sample=sample)[:, :-1]


def video_to_video(pipe, prompts, videos, *, strength, sample):
    """SDEdit: each video's latent noised to `strength` (0: unchanged, 1: ignored) and denoised
    under the new prompt."""
    _, t, h, w, _ = videos.shape
    return pipe.generate(
        prompts, frames=t, height=h, width=w, init_video=videos, strength=strength, **sample
    )


def long_video(pipe, prompts, *, frames, window, height, width, sample, images=None):
    """`frames` frames (any number) by sliding-window extension of `window`-frame clips.

    Each window continues from the last `context_frames` frames of the video so far, so the
    DiT's memory is that of one window whatever the length; only the uint8 result grows.
    Window i > 0 samples with seed(s) + i * WINDOW_SEED_STRIDE, apart from other videos' seeds.
    """
    if images is None:
        size = dict(frames=window, height=height, width=width)
        videos = text_to_video(pipe, prompts, **size, sample=sample)
    else:
        videos = image_to_video(pipe, prompts, images, frames=window, sample=sample)
    step = window - context_frames(pipe)
    windows = max(0, -(-(frames - videos.shape[1]) // step))
    for i in tqdm(range(windows), desc="long video", unit="window", disable=windows < 2):
        seeded = {**sample, "seed": np.asarray(sample["seed"]) + (i + 1) * WINDOW_SEED_STRIDE}
        videos = extend(pipe, prompts, videos, direction="forward", frames=window, sample=seeded)
    return videos[:, :frames]


def _check_length(videos, frames: int, what: str) -> None:
    if videos.ndim != 5 or videos.shape[1] < frames:
        raise ValueError(f"the {what} needs {frames}+ frames [B,T,H,W,3], got {videos.shape}")
