"""Prompt-adherence evaluation: the real probe over real Shapes World renders."""

import ml_collections
import numpy as np
import pytest

from sora_jax import probe_eval, prompt_expansion, task_eval
from sora_jax.data.shapes_world.world import generate_clip

DATA = ml_collections.ConfigDict({"world_seed": 0, "sizes": ((17, 64, 64),)})


def _renders(split, num):
    return {c["caption"]: c["video"] for c in (generate_clip(i, split=split) for i in range(num))}


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_ground_truth_videos_score_near_one_and_blank_videos_score_low(split):
    prompts = probe_eval.probe_prompts(DATA, split, 12)
    renders = _renders(split, 12)
    assert set(prompts) <= set(renders)  # the same clips as the world renders

    def truth(batch, seeds):
        return np.stack([renders[p] for p in batch])

    summary, rows, videos = probe_eval.evaluate(
        truth, probe_eval.PromptSet.numbered(prompts), batch_size=5
    )
    assert summary["num_videos"] == len(rows) == len(videos) == 12
    assert summary["adherence"] >= 0.95 and summary["attributes"]["color"] == 1.0

    def blank(batch, seeds):
        return np.zeros((len(batch), 17, 64, 64, 3), np.uint8)

    summary, _, _ = probe_eval.evaluate(blank, probe_eval.PromptSet.numbered(prompts), batch_size=5)
    assert summary["attributes"]["color"] == 0.0 and summary["adherence"] < 0.5


def test_summary_pools_counts_over_videos():
    readings = [
        {"adherence": 1.0, "counts": {"color": [1, 1], "shape": [1, 1]}},
        {"adherence": 0.25, "counts": {"color": [1, 2], "shape": [0, 2]}},
    ]
    summary = probe_eval.summarize(readings)
    assert summary["adherence"] == 3 / 6
    assert summary["attributes"] == {"color": 2 / 3, "shape": 1 / 3}
    assert summary["all_correct"] == 0.5


def test_prompt_sets_differ_by_split_and_start():
    train = probe_eval.probe_prompts(DATA, "train", 4, start=100)
    assert train == probe_eval.probe_prompts(DATA, "train", 8, start=96)[4:]
    with pytest.raises(prompt_expansion.PromptNotUnderstood, match="cannot read"):
        probe_eval.with_expansions(probe_eval.PromptSet.numbered(["a cat"]), False, 17, 64, 64)


def test_paraphrased_prompts_are_scored_on_what_they_state():
    clip = generate_clip(0, split="train")
    obj = clip["labels"]["shots"][0]["objects"][0]
    canonical = probe_eval.PromptSet.numbered([clip["caption"]])
    assert probe_eval.with_expansions(canonical, False, 17, 64, 64) is canonical
    # The same scene in other words, leaving the size and the background out.
    colour = {v: k for k, v in prompt_expansion.COLOR_WORDS.items() if k != v}[obj["color"]]
    words = f"{colour} {obj['shape']} {obj['motion'].replace('moves ', 'heading ')}"
    loose = probe_eval.with_expansions(probe_eval.PromptSet.numbered([words]), False, 17, 64, 64)
    assert loose.model_prompts == [words]  # without --expand_prompt the model reads the words
    reading = loose.read(clip["video"], 0)
    assert "size" not in reading["attributes"] and "background" not in reading["attributes"]
    assert reading["attributes"]["color"] == reading["attributes"]["motion"] == 1.0
    expanded = probe_eval.with_expansions(probe_eval.PromptSet.numbered([words]), True, 17, 64, 64)
    assert expanded.model_prompts == [expanded.expansions[0].detailed]
    # A blank video fails every stated attribute, and only those are counted.
    blank = loose.read(np.zeros_like(clip["video"]), 0)
    assert blank["num_prompted"] == reading["num_prompted"] and blank["attributes"]["color"] == 0


def test_task_metrics():
    still = np.zeros((5, 8, 8, 3), np.uint8)
    moving = np.stack([np.full((8, 8, 3), 10 * t, np.uint8) for t in range(5)])
    np.testing.assert_allclose(task_eval.frame_differences(moving), 10.0)
    # A jump of 30 after frames that change by 10 is 3x; on a still clip the floor (1) applies.
    assert task_eval.seam_ratio(moving[0], moving[0] + 30, moving) == pytest.approx(3.0)
    assert task_eval.seam_ratio(still[0], still[0] + 2, still) == pytest.approx(2.0)
    caption = "a small red circle moves left on a black background"
    assert task_eval.swap_color(caption) == caption.replace("red", "green")
    assert task_eval.swap_color("a large pink square stays still on a white background").startswith(
        "a large red square"
    )
    with pytest.raises(ValueError, match="no object colour"):
        task_eval.swap_color("a cat")
