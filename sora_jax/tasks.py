"""Every generation task as clean conditioning frames in the DiT's token sequence (DESIGN.md).

A clip of `t` latent frames is generated with some of its frames given, clean (timestep 0, never
noised, predicted or scored):

- **head** frames (the first k) replace the clip's own first k latent frames in place. The VAE is
  causal, so those latents are exactly the encoding of the first 1 + r (k - 1) pixel frames alone
  (r = the VAE's temporal factor): they carry nothing about the frames to be generated.
- **tail** frames (the last k) cannot come from the clip's own encoding, whose last latent frames
  have seen the whole clip. They are the encoding of the last 1 + r (k - 1) pixel frames alone,
  appended as extra tokens at the time coordinates t - k .. t - 1 of the frames they show, so
  the noisy tokens at those coordinates learn to become them (the LTX-Video keyframe idea).

The tasks, with (head, tail) latent frames given; `context` is the overlap of an extension:

| task            | head    | tail    | generation                                        |
|-----------------|---------|---------|---------------------------------------------------|
| t2v             | 0       | 0       | text to video (and `frames=1`: text to image)     |
| i2v             | 1       | 0       | animate a first frame                             |
| i2v_tail        | 0       | 1       | lead up to a last frame                           |
| extend_forward  | context | 0       | continue a video; repeated, a long video          |
| extend_backward | 0       | context | what came before a video                          |
| interpolate     | 1       | 1       | connect two frames or clips; a loop ends on its start |

Training draws one task per example with the config's weights (`draw_tasks`), deterministically
from (seed, step), so a resumed run sees the same tasks. A batch of one shape draws all its tasks
from one group, those that append tail frames or the others (`draw_batch_tasks`), so that most
batches carry no tail tokens.
"""

import numpy as np

TASKS = ("t2v", "i2v", "i2v_tail", "extend_forward", "extend_backward", "interpolate")


def layout(task: str, context: int) -> tuple[int, int]:
    """(head, tail) latent frames given for `task`."""
    table = {
        "t2v": (0, 0),
        "i2v": (1, 0),
        "i2v_tail": (0, 1),
        "extend_forward": (context, 0),
        "extend_backward": (0, context),
        "interpolate": (1, 1),
    }
    if task not in table:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return table[task]


def check_weights(weights: dict) -> None:
    unknown = sorted(set(weights) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown tasks {unknown} in the task weights; expected some of {TASKS}")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"task weights must be >= 0 with a positive sum, got {dict(weights)}")


def tail_lengths(weights: dict, context: int) -> tuple[int, ...]:
    """The tail lengths (in latent frames) that tasks with a positive weight need."""
    return tuple(sorted({layout(t, context)[1] for t, w in weights.items() if w > 0} - {0}))


def pixel_frames(latent_frames: int, temporal_factor: int) -> int:
    """Pixel frames whose causal encoding alone is `latent_frames` latent frames."""
    return 1 + temporal_factor * (latent_frames - 1)


def draw_tasks(weights: dict, num: int, *, seed: int, step: int) -> list[str]:
    """`num` task names drawn with the given (unnormalised) weights, a pure function of the step."""
    check_weights(weights)
    names = [t for t in TASKS if weights.get(t, 0) > 0]
    p = np.asarray([weights[t] for t in names], np.float64)
    rng = np.random.default_rng([seed, step, 7])
    return [names[i] for i in rng.choice(len(names), size=num, p=p / p.sum())]


def draw_batch_tasks(weights: dict, num: int, *, seed: int, step: int, context: int) -> list[str]:
    """`draw_tasks` for one batch of one shape, within one group: the tasks that append tail
    frames, drawn with their share of the weight, or the others.

    Each example's task keeps the weights' distribution, and only the tail group's batches pay for
    tail tokens: one extend-backward example pads a whole batch of 17-frame clips (80 tokens with
    1x4x4 patches of the tiny latent) to 112 tokens and to the masked attention path.
    """
    check_weights(weights)
    groups = {False: {}, True: {}}
    for name, weight in weights.items():
        if weight > 0:
            groups[layout(name, context)[1] > 0][name] = weight
    share = sum(groups[True].values()) / sum(weights.values())
    rng = np.random.default_rng([seed, step, 11])
    return draw_tasks(groups[bool(rng.random() < share)], num, seed=seed, step=step)


def batch_tail(tasks, weights: dict, latent_frames: int, context: int) -> int:
    """The tail frames a batch of clips of `latent_frames` latent frames appends for `tasks`:
    none when no task of the batch has a tail such a clip fits (a task that does not fit falls
    back to text-to-video), else the longest tail any task of `weights` fits, so that a bucket
    is compiled once with tails (of one length) and once without."""

    def longest(names):
        layouts = (layout(name, context) for name in names)
        return max((tail for head, tail in layouts if head + tail < latent_frames), default=0)

    return longest([name for name, w in weights.items() if w > 0]) if longest(tasks) else 0


def conditioning_batch(tasks, latent_shape, tails: dict, context: int, longest_tail: int) -> dict:
    """The conditioning fields of a train batch of latents `latent_shape` for the drawn `tasks`.

    `tails` maps a tail length k to the [B, k, h, w, c] latents of each clip's last frames
    encoded alone (from the latent cache; absent for clips too short). Returns numpy arrays:
      cond_frames [B, t] bool: head frames, clean in place;
      tail_latent [B, K, h, w, c], tail_time [B, K] float32, tail_valid [B, K] bool, only when
        `longest_tail` K > 0: the tail frames appended as extra tokens, unused slots padding.
    A task that needs more frames than a clip has (an image) falls back to text-to-video.
    """
    b, t, h, w, c = latent_shape
    batch = {"cond_frames": np.zeros((b, t), bool)}
    if longest_tail:
        batch["tail_latent"] = np.zeros((b, longest_tail, h, w, c), np.float32)
        batch["tail_time"] = np.zeros((b, longest_tail), np.float32)
        batch["tail_valid"] = np.zeros((b, longest_tail), bool)
    for i, task in enumerate(tasks):
        head, tail = layout(task, context)
        if head + tail >= t:
            continue
        if tail > longest_tail or (tail and tail not in tails):
            raise ValueError(f"task {task} needs the last {tail} latent frames encoded alone")
        batch["cond_frames"][i, :head] = True
        if tail:
            batch["tail_latent"][i, :tail] = tails[tail][i]
            batch["tail_time"][i, :tail] = np.arange(t - tail, t)
            batch["tail_valid"][i, :tail] = True
    return batch
