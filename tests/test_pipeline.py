"""Grain pipeline: bucketing, per-process shards, exact resume, and the TFDS round trip."""

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds

from sora_jax.data import pipeline
from sora_jax.data.shapes_world.tfds_builder import build_shapes_world
from sora_jax.data.shapes_world.world import ShapesWorldSource

SIZES = ((17, 64, 64), (9, 48, 80), (1, 80, 48))


def _iterate(ds, num_threads=2):
    return iter(
        ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4))
    )


def test_batches_are_bucketed_by_shape():
    source = ShapesWorldSource(num_clips=60, sizes=SIZES)
    ds = pipeline.make_dataset(source, global_batch_size=4, seed=0, num_epochs=1)
    shapes = set()
    seen = []
    for batch in _iterate(ds):
        assert batch["video"].dtype == np.uint8
        shapes.add(batch["video"].shape)
        seen += list(batch["index"])
        for i, caption in zip(batch["index"], batch["caption"], strict=True):
            assert SIZES[source.bucket_of(int(i))] == batch["video"].shape[1:4]
            assert isinstance(caption, str) and caption
    assert shapes == {(4, *s, 3) for s in SIZES}
    assert len(seen) == len(set(seen))  # an epoch visits each clip at most once


def test_resume_from_iterator_state_yields_the_same_next_batch():
    source = ShapesWorldSource(num_clips=40, sizes=SIZES)
    ds = pipeline.make_dataset(source, global_batch_size=2, seed=5, detailed_caption_prob=0.5)
    uninterrupted = _iterate(ds)
    for _ in range(7):
        next(uninterrupted)
    interrupted = _iterate(ds)
    for _ in range(7):
        next(interrupted)
    state = interrupted.get_state()
    expected = [next(uninterrupted) for _ in range(3)]
    resumed = _iterate(ds, num_threads=1)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        np.testing.assert_array_equal(got["video"], want["video"])
        assert list(got["caption"]) == list(want["caption"])


def test_epochs_reshuffle_and_processes_partition_the_global_batch():
    source = ShapesWorldSource(num_clips=16, sizes=((1, 32, 32),))
    ds = pipeline.make_dataset(source, global_batch_size=4, seed=1)
    epoch0 = [list(ds[j]["index"]) for j in range(4)]
    epoch1 = [list(ds[j]["index"]) for j in range(4, 8)]
    assert sorted(sum(epoch0, [])) == list(range(16)) == sorted(sum(epoch1, []))
    assert epoch0 != epoch1
    parts = [
        pipeline.make_dataset(source, global_batch_size=4, seed=1, process_index=p, process_count=2)
        for p in range(2)
    ]
    for j in range(4):
        rows = [list(part[j]["index"]) for part in parts]
        assert len(rows[0]) == len(rows[1]) == 2
        assert sorted(rows[0] + rows[1]) == sorted(epoch0[j])


def test_detailed_captions_are_mixed_in():
    source = ShapesWorldSource(num_clips=32, sizes=((1, 32, 32),))
    ds = pipeline.make_dataset(
        source, global_batch_size=8, seed=0, detailed_caption_prob=0.5, num_epochs=1
    )
    captions = [c for j in range(len(ds)) for c in ds[j]["caption"]]
    detailed = [c for c in captions if c[0].isupper()]
    assert 0 < len(detailed) < len(captions)


def test_bad_batch_configuration_is_refused():
    source = ShapesWorldSource(num_clips=5, sizes=((1, 32, 32),))
    with pytest.raises(ValueError, match="full global batch"):
        pipeline.make_dataset(source, global_batch_size=8)
    with pytest.raises(ValueError, match="divisible"):
        pipeline.make_dataset(source, global_batch_size=3, process_count=2)


def test_tfds_build_and_read_through_grain(tmp_path):
    name = build_shapes_world(
        str(tmp_path), frames=5, height=32, width=48, num_train=12, num_heldout=4
    )
    train = tfds.data_source(name, data_dir=str(tmp_path), split="train")
    heldout = tfds.data_source(name, data_dir=str(tmp_path), split="heldout")
    assert (len(train), len(heldout)) == (12, 4)
    on_the_fly = ShapesWorldSource(num_clips=12, sizes=((5, 32, 48),))
    np.testing.assert_array_equal(train[3]["video"], on_the_fly[3]["video"])
    ds = pipeline.make_dataset(train, global_batch_size=4, seed=0, num_epochs=1)
    batches = list(_iterate(ds))
    assert len(batches) == 3
    assert batches[0]["video"].shape == (4, 5, 32, 48, 3)
    assert all(isinstance(c, str) for b in batches for c in b["caption"])
