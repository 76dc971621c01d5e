"""The held-out prompt suite: the shipped file is what its generator writes, covers what it
promises, and every row is a real Shapes World clip the probe reads back."""

import collections
import json

import jax
import numpy as np
import pytest

from sora_jax import cli, dit_lib, eval_suite, probe_eval, task_eval
from sora_jax.data.shapes_world import probe, vocab


@pytest.fixture(scope="module")
def rows():
    return eval_suite.load()


def test_the_shipped_file_is_what_the_generator_writes(tmp_path, rows):
    written = eval_suite.write(tmp_path / "suite.jsonl")
    assert written.read_text() == eval_suite.SUITE_FILE.read_text()
    assert [r["seed"] for r in rows] == list(range(len(rows)))  # a seed each, none shared
    assert len({r["id"] for r in rows}) == len(rows)


def test_the_suite_covers_every_value_pair_category_and_task(rows):
    t2v, tasks = eval_suite.groups(rows)
    assert list(t2v) == [c for c in eval_suite.CATEGORIES if c != "task"]
    values = collections.Counter(
        (r["attribute"], r["value"]) for r in rows if r["category"] == "attribute"
    )
    for attribute, names in eval_suite.ATTRIBUTE_VALUES.items():
        for value in names:
            assert values[attribute, value] == eval_suite.PER_VALUE, (attribute, value)
    pairs = collections.Counter(tuple(r["pair"]) for r in t2v["heldout_composition"])
    assert set(pairs) == set(vocab.HELDOUT_PAIRS)
    assert list(tasks) == list(task_eval.TASKS)
    assert all(len(clips) == eval_suite.PER_TASK for clips in tasks.values())
    assert " and " in t2v["multi_object"][0]["prompt"]
    assert all("passes behind" in r["prompt"] for r in t2v["occlusion"])
    assert all(vocab.SHOT_SEPARATOR in r["prompt"] for r in tasks["multi_shot"])
    limited, by_task = eval_suite.groups(rows, limit=1)
    assert all(len(g) == 1 for g in [*limited.values(), *by_task.values()])


def test_every_prompt_is_its_clip_and_the_probe_reads_it_back(rows):
    t2v, _ = eval_suite.groups(rows)
    for category, group in t2v.items():
        readings = []
        for row in group:
            clip = eval_suite.clip(row)  # raises if the world no longer draws this caption
            assert clip["video"].shape == (*eval_suite.size_of([row]), 3)
            readings.append(probe.probe(clip["video"], row["prompt"]))
        summary = probe_eval.summarize(readings)
        assert summary["adherence"] >= 0.97, (category, summary)
        if category == "occlusion":
            assert summary["attributes"]["reappears"] == 1.0


def test_a_changed_world_or_a_bad_row_is_refused(tmp_path, rows):
    moved = {**rows[0], "clip": {**rows[0]["clip"], "index": rows[0]["clip"]["index"] + 1}}
    with pytest.raises(ValueError, match="rebuild the suite"):
        eval_suite.clip(moved)
    for bad, message in [
        ({**rows[0], "category": "poetry"}, "category 'poetry'"),
        ({**rows[-1], "task": "dance"}, "task 'dance'"),
        ({**rows[0], "seed": "7"}, "integer"),
    ]:
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps(rows[1]) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(cli.UserError, match=f"bad.jsonl:2: .*{message}"):
            eval_suite.load(path)


def test_per_row_seeds_do_not_depend_on_the_batch():
    """`PromptSet.numbered` seeds by position; batches hand each prompt its own seed."""
    caption = "a small red circle moves left on a black background"
    prompts = probe_eval.PromptSet.numbered([caption] * 3, seed=10)
    assert prompts.seeds == [10, 11, 12]
    seen = []

    def generate(batch, seeds):
        seen.append(list(seeds))
        return np.zeros((len(batch), 1, 16, 16, 3), np.uint8)

    probe_eval.evaluate(generate, prompts, batch_size=2)
    assert seen == [[10, 11], [12]]


def test_a_video_s_noise_depends_on_its_own_seed_only():
    def noise(keys):
        return jax.vmap(lambda key: jax.random.normal(key, (3, 4)))(keys)

    pair = noise(dit_lib.noise_keys([3, 7], 2))
    np.testing.assert_array_equal(pair[1], noise(dit_lib.noise_keys([7], 1))[0])
    assert not np.array_equal(pair[0], pair[1])
    assert dit_lib.noise_keys(5, 2).shape == ()  # one int: one key for the whole batch
    with pytest.raises(ValueError, match="expected one seed or 2 seeds"):
        dit_lib.noise_keys([1, 2, 3], 2)
