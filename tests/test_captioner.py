"""The video captioner: caption parsing, tokenizer, cached decoding, train-captioner + caption."""

import copy
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sora_jax import caption_eval, captioner_lib, checkpoints, config_lib, train_captioner
from sora_jax.caption_tokenizer import BOS, EOS, PAD, CaptionTokenizer
from sora_jax.data import video_folder
from sora_jax.data.shapes_world import captions, vocab, world
from sora_jax.metric_writers import read_metrics
from sora_jax.models.captioner import silhouettes
from sora_jax.video_io import write_video


@pytest.mark.parametrize("split, size", [("train", (17, 64, 64)), ("heldout", (9, 48, 80))])
def test_detailed_captions_parse_back_to_their_labels(split, size):
    frames, height, width = size
    for index in range(150):
        clip = world.generate_clip(index, split=split, frames=frames, height=height, width=width)
        parsed = captions.parse_detailed_caption(clip["detailed_caption"])
        shots = clip["labels"]["shots"]
        assert [s["cut_frame"] or 0 for s in parsed] == [s["start_frame"] for s in shots]
        for got, want in zip(parsed, shots, strict=True):
            assert got["background"] == want["background"]
            for o, w in zip(got["objects"], want["objects"], strict=True):
                assert {k: o[k] for k in ("color", "shape", "size", "motion", "speed")} == {
                    k: w[k] for k in ("color", "shape", "size", "motion", "speed")
                }
                assert o["occluded"] == bool(w["occluded_frames"] and "wall" in want)
                assert o["position"]
        # The truth scores perfectly against itself; a wrong word costs exactly its attribute.
        assert caption_eval.score_caption(clip["detailed_caption"], clip["detailed_caption"])[
            "exact"
        ]
    with pytest.raises(ValueError, match="no single background"):
        captions.parse_detailed_caption("A small red circle sits in the center of the frame.")


def test_scoring_counts_each_wrong_attribute():
    truth = next(
        c["detailed_caption"]
        for c in map(world.generate_clip, range(50))
        if len(c["labels"]["shots"]) == 1 and len(c["labels"]["shots"][0]["objects"]) == 1
    )
    (obj,) = captions.parse_detailed_caption(truth)[0]["objects"]
    other = next(c for c in ("red", "blue") if c != obj["color"])
    wrong = truth.replace(f" {obj['color']} ", f" {other} ", 1)
    score = caption_eval.score_caption(wrong, truth)
    assert not score["exact"] and score["counts"]["color"] == [0, 1]
    assert score["counts"]["shape"] == [1, 1] and score["counts"]["background"] == [1, 1]
    nonsense = caption_eval.score_caption("hello", truth)
    assert not nonsense["parsed"] and all(c == 0 for c, _ in nonsense["counts"].values())


def test_scoring_ignores_the_order_objects_are_listed_in():
    clip = next(
        c
        for c in (world.generate_clip(i, draw=False) for i in range(200))
        if len(c["labels"]["shots"]) == 1 and len(c["labels"]["shots"][0]["objects"]) == 2
    )
    swapped = copy.deepcopy(clip["labels"])
    swapped["shots"][0]["objects"].reverse()
    listed_the_other_way = captions.detailed_caption(swapped, 64, 64, np.random.default_rng(0))
    truth = captions.detailed_caption(clip["labels"], 64, 64, np.random.default_rng(0))
    assert listed_the_other_way != truth
    assert caption_eval.score_caption(listed_the_other_way, truth)["exact"]
    first = swapped["shots"][0]["objects"][0]
    other = next(c for c in ("red", "blue") if c != first["color"])
    first["color"] = other
    one_wrong = captions.detailed_caption(swapped, 64, 64, np.random.default_rng(0))
    score = caption_eval.score_caption(one_wrong, truth)
    assert not score["exact"] and score["counts"]["color"] == [1, 2]
    assert score["counts"]["shape"] == [2, 2]


def test_tokenizer_round_trips_and_refuses_captions_too_long():
    texts = [world.generate_clip(i)["detailed_caption"] for i in range(200)]
    tokenizer = CaptionTokenizer.train(texts, vocab_size=400, max_length=160)
    again = CaptionTokenizer.train(texts, vocab_size=400, max_length=160)
    assert tokenizer.to_json() == again.to_json()  # deterministic
    ids = tokenizer.encode(texts[:8])
    assert (ids[:, 0] == BOS).all() and ((ids == EOS).sum(1) == 1).all()
    assert tokenizer.decode(ids) == texts[:8]
    assert tokenizer.decode(tokenizer.encode(["Ünïcode 🎥 still round-trips"])) == [
        "Ünïcode 🎥 still round-trips"
    ]
    with pytest.raises(ValueError, match="does not fit max_length"):
        CaptionTokenizer(tokenizer.tokenizer, max_length=8).encode(texts[:1])


def test_colour_swap_changes_only_the_colour_tokens_of_the_decoder_input():
    texts = [world.generate_clip(i)["detailed_caption"] for i in range(300)]
    tokenizer = CaptionTokenizer.train(texts, vocab_size=512, max_length=160)
    color_ids = captioner_lib.color_token_ids(tokenizer)
    assert tokenizer.decode(color_ids[:, None]) == list(vocab.COLORS)
    ids = jnp.asarray(tokenizer.encode(texts[:32]))
    is_color = np.isin(ids, color_ids)
    assert is_color.sum() >= 32  # every caption names at least one colour
    swapped = captioner_lib.swap_color_tokens(ids, color_ids, 1.0, jax.random.key(0))
    assert jnp.array_equal(jnp.where(is_color, 0, swapped), jnp.where(is_color, 0, ids))
    assert np.isin(swapped[is_color], color_ids).all()
    assert (swapped != ids).sum() > 0.6 * is_color.sum()  # 7 in 8 draws pick another colour
    unchanged = captioner_lib.swap_color_tokens(ids, color_ids, 0.0, jax.random.key(0))
    assert jnp.array_equal(unchanged, ids)
    few_merges = CaptionTokenizer.train(texts, vocab_size=400, max_length=400)
    with pytest.raises(ValueError, match="one token"):
        captioner_lib.color_token_ids(few_merges)


def _tiny_model(max_length=24, vocab=40):
    model = captioner_lib.make_model(
        config_lib.ml_collections.ConfigDict(
            dict(width=32, heads=2, encoder_depth=1, decoder_depth=2, patch=16,
                 max_length=max_length)
        ),
        vocab,
    )  # fmt: skip
    return model, captioner_lib.init_params(model, jax.random.key(1), 5, 32, 32)


def test_the_loss_swaps_colours_of_the_inputs_only():
    model, params = _tiny_model()
    color_ids = np.arange(5, 13)
    ids = jax.random.randint(jax.random.key(3), (4, 24), 3, 40).at[:, 0].set(BOS)
    batch = {"video": jnp.zeros((4, 5, 32, 32, 3), jnp.uint8), "ids": ids}
    rng = jax.random.key(4)
    loss, _ = captioner_lib.make_loss_fn(model, color_ids, 1.0)(params, batch, rng, 0)
    inputs = captioner_lib.swap_color_tokens(ids[:, :-1], color_ids, 1.0, rng)
    assert not jnp.array_equal(inputs, ids[:, :-1])
    logits = model.apply({"params": params}, captioner_lib.to_model_input(batch["video"]), inputs)
    by_hand = optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean()
    assert jnp.allclose(loss, by_hand, rtol=1e-5)
    plain, _ = captioner_lib.make_loss_fn(model)(params, batch, rng, 0)
    assert not jnp.allclose(loss, plain)
    with pytest.raises(ValueError, match="colour token ids"):
        captioner_lib.make_loss_fn(model, None, 0.5)
    with pytest.raises(ValueError, match=r"rate in \[0, 1\]"):
        captioner_lib.make_loss_fn(model, color_ids, 1.5)


def test_silhouettes_are_the_same_for_every_object_colour():
    frame = np.full((1, 1, 32, 32, 3), 255, np.uint8)  # a white background
    red, blue = frame.copy(), frame.copy()
    red[..., 8:20, 10:22, :] = (220, 30, 30)
    blue[..., 8:20, 10:22, :] = (30, 60, 200)
    out = [silhouettes(captioner_lib.to_model_input(v)) for v in (red, blue)]
    assert out[0].shape == (1, 1, 32, 32, 1) and jnp.array_equal(out[0], out[1])
    inside = np.zeros((32, 32), bool)
    inside[8:20, 10:22] = True
    np.testing.assert_array_equal(np.asarray(out[0][0, 0, :, :, 0]), np.where(inside, 1.0, -1.0))
    model = captioner_lib.make_model(
        config_lib.ml_collections.ConfigDict(
            dict(width=32, heads=2, encoder_depth=1, decoder_depth=1, patch=16, max_length=24,
                 frame_differences=True, silhouettes=True)
        ),
        40,
    )  # fmt: skip
    params = captioner_lib.init_params(model, jax.random.key(0), 1, 32, 32)
    assert params["encoder"]["patch"]["kernel"].shape == (16 * 16 * 7, 32)  # RGB, change, shape
    dark = np.zeros_like(red)  # a black background: the median is the background, whatever it is
    dark[..., 8:20, 10:22, :] = (220, 30, 30)
    assert jnp.array_equal(silhouettes(captioner_lib.to_model_input(dark)), out[0])


def test_cached_decoding_matches_teacher_forcing_and_beams_find_likelier_captions():
    model, params = _tiny_model()
    video = jax.random.randint(jax.random.key(2), (3, 5, 32, 32, 3), 0, 255).astype(jnp.uint8)
    greedy = captioner_lib.beam_search(model, params, video, 1)
    apply = jax.jit(model.apply)  # one compile for both captions (op by op is slower here)
    # Teacher-forcing the greedy caption gives the same argmax at every step it decoded.
    logits = apply({"params": params}, captioner_lib.to_model_input(video), greedy[:, :-1])
    decoded = greedy[:, 1:]
    live = jnp.cumsum(decoded == EOS, axis=1) - (decoded == EOS) == 0
    live &= decoded != PAD
    assert jnp.all(jnp.where(live, logits.argmax(-1) == decoded, True))

    def log_prob(ids):
        lp = jax.nn.log_softmax(
            apply({"params": params}, captioner_lib.to_model_input(video), ids[:, :-1])
        )
        per_token = jnp.take_along_axis(lp, ids[:, 1:, None], -1)[..., 0]
        return jnp.sum(jnp.where(ids[:, 1:] != PAD, per_token, 0.0), axis=1)

    beam = captioner_lib.beam_search(model, params, video, 4)
    assert beam.shape == greedy.shape and (beam[:, 0] == BOS).all()

    # Beams rank by length-normalised score, so compare that way.
    def normalised(ids):
        length = jnp.sum(ids[:, 1:] != PAD, axis=1)
        return log_prob(ids) / jnp.maximum(length, 1) ** 0.6

    assert jnp.all(normalised(beam) >= normalised(greedy) - 1e-4)


def _config(steps):
    config = config_lib.load_config(f"configs/captioner_tiny.py:batch=8,steps={steps},width=32")
    config.data.sizes = ((5, 32, 32),)
    config.model.update(heads=2, encoder_depth=1, decoder_depth=1, max_length=192)
    config.tokenizer.corpus_clips = 300
    config.tokenizer.vocab_size = 512  # enough merges for one-token colours (colour swapping)
    config.log_every = 1
    config.checkpoint_every = 2
    config.sample_every = 2
    config.sample_clips = 3
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("captioner_run")
    before_silhouettes = _config(2)  # as configs were before model.silhouettes existed
    with before_silhouettes.unlocked():
        del before_silhouettes.model["silhouettes"]
    first = train_captioner.train_and_evaluate(before_silhouettes, str(workdir))
    resumed = _config(3)
    resumed.model.silhouettes = False  # what the field's absence meant
    resumed = train_captioner.train_and_evaluate(resumed, str(workdir))
    return workdir, first, resumed


def test_training_resumes_logs_and_scores_held_out_captions(run):
    workdir, first, resumed = run
    assert first["step"] == 2 and resumed["step"] == 3
    logged = [m for m in read_metrics(workdir) if "loss" in m]
    assert [m["step"] for m in logged] == [1, 2, 3]
    assert all(np.isfinite(m["loss"]) for m in logged)
    scored = [m for m in read_metrics(workdir) if "caption_exact" in m]
    assert [m["step"] for m in scored] == [2, 3] and "caption_color" in scored[0]
    rows = (workdir / "samples" / "captions_0000003.jsonl").read_text().splitlines()
    assert len(rows) == 3 and {"reference", "caption", "counts"} <= set(json.loads(rows[0]))
    other_model = _config(4)  # with silhouettes
    with pytest.raises(checkpoints.CheckpointError, match="different config.model"):
        train_captioner.train_and_evaluate(other_model, str(workdir))
    captioner = captioner_lib.load(workdir)
    assert captioner.step == 3 and 400 < captioner.tokenizer.vocab_size <= 512  # merges run out


def test_an_exported_bundle_captions_like_its_run(run, tmp_path):
    workdir, _, _ = run
    meta = captioner_lib.export(workdir, tmp_path / "bundle")
    assert meta["kind"] == "captioner" and meta["step"] == 3
    videos, _ = caption_eval.clips(2, 0, (5, 32, 32))
    from_run, from_bundle = captioner_lib.load(workdir), captioner_lib.load(tmp_path / "bundle")
    assert from_bundle.caption(videos, 2) == from_run.caption(videos, 2)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-c", "from sora_jax.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_caption_recaptions_a_folder_the_video_folder_source_reads(run, tmp_path):
    workdir, _, _ = run
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.gif", "sub/b.gif"]):
        clip = world.generate_clip(i, frames=5, height=32, width=32)
        write_video(folder / name, clip["video"], fps=8)
    (folder / "broken.mp4").write_bytes(b"not a video")
    done = _cli(
        "caption", "--checkpoint", str(workdir), "--videos", str(folder), "--beam_size", "2"
    )
    assert done.returncode == 0, done.stderr
    assert "skipped broken.mp4" in done.stdout
    lines = [json.loads(x) for x in (folder / "captions.jsonl").read_text().splitlines()]
    assert sorted(x["file"] for x in lines) == ["a.gif", "sub/b.gif"]
    source = video_folder.VideoFolderSource(folder, fps=8, frame_counts=[5], buckets=[(32, 32)])
    assert len(source) == 2 and source[0]["caption"] == lines[0]["caption"]
    again = _cli("caption", "--checkpoint", str(workdir), "--videos", str(folder))
    assert again.returncode == 2 and "pass --overwrite" in again.stderr
    report = tmp_path / "report"
    scored = _cli(
        "caption", "--checkpoint", str(workdir), "--heldout", "3", "--out_dir", str(report)
    )
    assert scored.returncode == 0, scored.stderr
    summary = json.loads((report / "report.json").read_text())
    assert (
        summary["num_videos"] == 3
        and len(summary["rows"]) == 3
        and "color" in summary["attributes"]
    )


def test_caption_refuses_what_is_not_a_captioner(run, tmp_path):
    missing = _cli(
        "caption", "--checkpoint", str(tmp_path / "none"), "--heldout", "2", "--out_dir", "x"
    )
    assert missing.returncode == 2 and "no checkpoint" in missing.stderr
    both = _cli("caption", "--checkpoint", "x", "--heldout", "2", "--videos", "y")
    assert both.returncode == 2 and "either --videos or --heldout" in both.stderr
