"""`train` and `generate` end to end on a micro VAE + micro DiT: the latent cache, bit-exact
resume, logs, samples, the sidecar, bad input; and a tiny overfit of the flow loss."""

import html
import json
import logging
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import linen as nn
from PIL import Image

from sora_jax import (
    bundle,
    checkpoints,
    config_lib,
    dit_lib,
    eval_suite,
    export_lib,
    provenance,
    task_eval,
    tasks,
    train,
    train_vae,
    vae_lib,
)
from sora_jax.data import latent_cache, sources
from sora_jax.diffusion import rectified_flow, samplers
from sora_jax.metric_writers import read_metrics
from sora_jax.video_io import read_video, write_video

SIZES = ((9, 32, 32),)


def _dit_config(vae_workdir, cache_dir, steps=4):
    config = config_lib.load_config(
        f"configs/dit_tiny.py:variant=micro/1x2x2,batch=8,steps={steps},clips=16,vae={vae_workdir}"
    )
    config.data.sizes = SIZES
    config.seed = 1  # steps 0 and 2 draw tail-task batches, 1 and 3 not: both train steps run
    config.latent_cache_dir = str(cache_dir)
    config.model.text.max_length = 128
    config.log_every = 1
    config.checkpoint_every = 2
    config.keep_checkpoints = 5
    config.sample_every = 4
    config.num_sample_prompts = 2
    config.sample_steps = 2
    return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dit")
    vae_config = config_lib.load_config(
        "configs/vae_tiny.py:variant=micro/t4s8c16,batch=8,steps=1,fixed,lpips=0"
    )
    vae_config.data.sizes = SIZES
    train_vae.train_and_evaluate(vae_config, str(root / "vae"))
    config = _dit_config(root / "vae", root / "cache")
    straight = root / "straight"
    batch_tails = []  # the tail length of every train batch the runs build

    def recording(*args):
        batch_tails.append(args[-1])
        return conditioning_batch(*args)

    conditioning_batch = tasks.conditioning_batch
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tasks, "conditioning_batch", recording)
        result = train.train_and_evaluate(config, str(straight))
        # Resume: a copy of the run that stopped after its step-2 checkpoint, trained on to 4.
        resumed = root / "resumed"
        shutil.copytree(straight, resumed, ignore=shutil.ignore_patterns("4", "samples"))
        lines = (resumed / "metrics.jsonl").read_text().splitlines()
        kept = [line for line in lines if json.loads(line)["step"] <= 2]
        (resumed / "metrics.jsonl").write_text("\n".join(kept) + "\n")
        train.train_and_evaluate(config, str(resumed))
    return root, straight, resumed, result, batch_tails


def test_resume_is_bit_exact(runs):
    _, straight, resumed, result, batch_tails = runs
    assert result["step"] == 4 and np.isfinite(result["loss"])
    a = dit_lib.load_pipeline(straight)
    b = dit_lib.load_pipeline(resumed)
    assert a.step == b.step == 4
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    steps = [m["step"] for m in read_metrics(resumed) if "loss" in m]
    assert steps == [1, 2, 3, 4]
    # Both halves of the run trained batches with tail frames and without (two compiled steps):
    # steps 0-3, then the resumed 2-3.
    assert batch_tails == [2, 0, 2, 0, 2, 0]


def test_factorized_attention_with_tail_tasks_is_refused_at_the_start(tmp_path):
    config = _dit_config(tmp_path / "no_vae", tmp_path / "cache")
    config.model.attention = "factorized"
    with pytest.raises(ValueError, match="factorized attention cannot read appended tail"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "cache").exists()


def test_run_writes_cache_vae_ref_logs_and_samples(runs):
    root, straight, _, _, _ = runs
    meta = latent_cache.read_meta(root / "cache")
    assert meta["num_clips"] == 16 and len(meta["latent_std"]) == 16
    source = latent_cache.LatentCacheSource(root / "cache")
    assert source[3]["latent"].shape == (3, 4, 4, 16) and source[3]["caption"]
    ref = dit_lib.read_vae_ref(straight)
    assert ref["step"] == 1 and ref["latent_std"] == meta["latent_std"]
    assert (straight / "samples" / "samples_0000004.gif").stat().st_size > 0
    assert any("sample_adherence" in m for m in read_metrics(straight))
    assert list((straight / "tensorboard").glob("events.out.tfevents.*"))


def test_a_changed_model_refuses_the_workdir(runs):
    root, straight, _, _, _ = runs
    config = _dit_config(root / "vae", root / "cache")
    config.model.variant = "micro/1x1x1"
    with pytest.raises(checkpoints.CheckpointError):
        train.train_and_evaluate(config, str(straight))


def test_a_run_saved_before_a_model_field_existed_still_resumes(runs, tmp_path):
    root, straight, _, _, _ = runs
    old = tmp_path / "old"
    shutil.copytree(straight, old)
    config = _dit_config(root / "vae", root / "cache")
    with config.unlocked():
        del config.model["rope_time_scale"]  # as configs were before the field: the same model
    assert dit_lib.model_fields(config.model)["rope_time_scale"] == 1.0
    before = read_metrics(old)
    assert train.train_and_evaluate(config, str(old))["step"] == 4
    assert read_metrics(old) == before  # resumed at its last step: nothing trained again
    config = _dit_config(root / "vae", root / "cache")
    config.model.rope_time_scale = 2.0  # a different model is still refused
    with pytest.raises(checkpoints.CheckpointError, match="different config.model"):
        train.train_and_evaluate(config, str(old))
    config = _dit_config(root / "vae", root / "cache")
    with config.unlocked():
        del config.diffusion["frame_noise_correlation"]  # likewise: the same prior, resumes
    assert train.train_and_evaluate(config, str(old))["step"] == 4
    config = _dit_config(root / "vae", root / "cache")
    config.diffusion.frame_noise_correlation = 0.5  # another prior is refused
    with pytest.raises(checkpoints.CheckpointError, match="frame_noise_correlation"):
        train.train_and_evaluate(config, str(old))


def _command(module, *args):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _generate(*args):
    return _command("sora_jax.generate", *args)


def test_generate_writes_video_and_sidecar(runs, tmp_path):
    _, straight, _, _, _ = runs
    out = tmp_path / "a.mp4"
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a small red circle moves left on a black background"}\n')
    proc = _generate(
        f"--checkpoint={straight}", f"--prompts={prompts}", f"--out_dir={tmp_path}/batch",
        "--steps=2", "--seed=3", "--sampler=heun", "--cfg_interval=0.1,0.9", "--shift=2",
        "--allow_unsafe_prompts",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "batch" / "0000.json").read_text())
    assert record["seed"] == 3 and record["sampler"] == "heun" and record["step"] == 4
    assert record["cfg_interval"] == [0.1, 0.9] and record["shift"] == 2.0
    assert record["prompt_policy"] == "disabled (--allow_unsafe_prompts)"
    proc = _generate(
        f"--checkpoint={straight}", f"--prompts={prompts}", f"--out_dir={tmp_path}/default",
        "--steps=1", "--allow_unsafe_prompts", "--checkpoint_step=2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # Without --shift the sidecar records the shift the sampler used: the run's at 80 tokens.
    record = json.loads((tmp_path / "default" / "0000.json").read_text())
    assert record["shift"] == 1.0 and record["step"] == 2  # the older checkpoint asked for
    credentials = provenance.read(tmp_path / "batch" / "0000.mp4")
    assert credentials["state"] == "Valid" and credentials["generation"]["checkpoint_step"] == 4
    assert credentials["generation"]["prompt_policy"] == "disabled (--allow_unsafe_prompts)"
    assert (tmp_path / "batch" / "0000.mp4").stat().st_size > 0

    bad = [
        (["--prompt= ", f"--out={out}"], "empty prompt"),
        (["--prompt=x", f"--out={out}", "--height=40"], "multiples of 16"),
        (["--prompt=x", f"--out={out}", "--frames=8"], "1 + 4k"),
        (["--prompt=x", f"--out={out}", "--task=i2v"], "needs exactly one of --image"),
        (["--prompt=x", f"--out={out}", "--task=extend", "--video=nope.mp4"], "no such video file"),
        (["--prompt=x", f"--out={tmp_path}/a.png"], "one text-to-image frame"),
        (["--prompt=x", f"--out={tmp_path}/a.txt"], "suffix"),
        (["--prompt=x", f"--out={out}", "--cfg_interval=0.9,0.1"], "0 <= lo < hi <= 1"),
        (["--prompt=x", f"--out={out}", "--shift=0"], "finite number > 0"),
        (["--prompt=x", f"--out={out}", "--shift=inf"], "finite number > 0"),
        (["--prompt=x", f"--out={out}", "--steps=0"], "--steps must be at least 1"),
        (["--prompt=x", f"--out={out}", "--checkpoint_step=3"], "no checkpoint for step 3"),
    ]
    for args, message in bad:  # the prompt policy (its own tests) would add ~5 s a call
        proc = _generate(f"--checkpoint={straight}", "--allow_unsafe_prompts", *args)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    proc = _generate(
        f"--checkpoint={tmp_path}/missing", "--allow_unsafe_prompts", "--prompt=x", f"--out={out}"
    )
    assert proc.returncode == 2 and "no checkpoints" in proc.stderr
    assert not out.exists() and not list(tmp_path.glob("*.json"))


def test_eval_reports_probe_adherence_per_set(runs, tmp_path):
    _, straight, _, _, _ = runs
    out_dir = tmp_path / "eval"
    proc = _command(
        "sora_jax.evaluate", f"--checkpoint={straight}", f"--out_dir={out_dir}",
        "--suite=default", "--num_prompts=2", "--tasks=i2v,multi_shot", "--num_task_clips=1",
        "--batch_size=4", "--steps=2", "--grid=2", "--sizes=17x64x64,5x32x48",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out_dir / "report.json").read_text())
    categories = ("attribute", "heldout_composition", "multi_object", "occlusion")
    assert list(report["t2v"]) == [f"{c}_{z}" for z in ("17x64x64", "5x32x48") for c in categories]
    assert report["step"] == 4 and report["settings"]["suite"].endswith("eval_suite.jsonl")
    assert report["settings"]["sizes"] == [[17, 64, 64], [5, 32, 48]]
    assert report["settings"]["prompt_policy"] == "enforced"
    suite = eval_suite.load()
    for name, summary in report["t2v"].items():
        assert summary["num_videos"] == 2 and 0.0 <= summary["adherence"] <= 1.0
        assert {"color", "shape", "size", "motion"} <= set(summary["attributes"])
        # FVD against the suite's own clips, which exist at the suite's size only.
        assert (summary["fvd"] > 0) if name.endswith("17x64x64") else ("fvd" not in summary)
    rows = [r for r in report["videos"] if r["set"] == "occlusion_17x64x64"]
    assert [r["prompt"] for r in rows] == [
        r["prompt"] for r in suite if r["category"] == "occlusion"
    ][:2]
    assert "reappears" in report["t2v"]["occlusion_17x64x64"]["attributes"]
    # Tasks on the suite's clips (two-shot ones for multi_shot, whose cuts come from labels).
    assert list(report["tasks"]) == ["i2v", "multi_shot"]
    assert report["tasks"]["i2v"]["frame0_psnr"] > 0
    assert 0 <= report["tasks"]["multi_shot"]["cuts_ok"] <= 1
    i2v = next(r for r in report["videos"] if r["set"] == "task_i2v")
    assert i2v["prompt"] == next(r["prompt"] for r in suite if r.get("task") == "i2v")
    assert len(report["videos"]) == 16 + 2
    assert (out_dir / "t2v_attribute_5x32x48.gif").stat().st_size > 0
    assert (out_dir / "task_multi_shot.gif").stat().st_size > 0
    # Every video is a file of its own, signed, and on the gallery page with its reading.
    page = (out_dir / "index.html").read_text()
    for row in report["videos"]:
        assert (out_dir / row["file"]).stat().st_size > 0 and f'src="{row["file"]}"' in page
        assert row["passed"] == (row["adherence"] == 1.0) and row["reading"]
    assert provenance.read(out_dir / report["videos"][-1]["file"])["state"] == "Valid"
    assert page.count('class="card"') == 18 and "Conditioned tasks" in page
    assert html.escape(report["videos"][0]["reading"]) in page

    # Without --suite: the probe's held-out prompts at the training size, and every task (the
    # run trained them all: 'auto') on held-out clips of the run's world; FVD is off (the run
    # above measured it).
    proc = _command(
        "sora_jax.evaluate", f"--checkpoint={straight}", f"--out_dir={tmp_path}/heldout",
        "--splits=heldout", "--num_prompts=2", "--num_task_clips=1", "--batch_size=4",
        "--steps=2", "--grid=0", "--nofvd", "--checkpoint_step=2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    heldout = json.loads((tmp_path / "heldout" / "report.json").read_text())
    assert list(heldout["t2v"]) == ["heldout"] and "fvd" not in heldout["t2v"]["heldout"]
    assert heldout["step"] == 2
    tasks = heldout["tasks"]
    assert list(tasks) == list(task_eval.TASKS) and all(
        t["num_videos"] == 1 for t in tasks.values()
    )
    assert tasks["i2v"]["frame0_psnr"] > 0 and 0 <= tasks["loop"]["seams_continuous"] <= 1
    assert tasks["interpolate"]["end_psnr"] > 0 and 0 <= tasks["extend_forward"]["identity"] <= 1
    assert 0 <= tasks["multi_shot"]["cuts_ok"] <= 1
    assert 0 <= tasks["long_video"]["seams_continuous"] <= 1
    assert (tmp_path / "heldout" / "index.html").read_text().count('class="card"') == 2 + 8
    proc = _command(
        "sora_jax.evaluate", f"--compare={out_dir},{out_dir}/report.json",
        f"--out_dir={tmp_path}/compare",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "t2v attribute_17x64x64: FVD" in proc.stdout and "(+0.000)" in proc.stdout
    assert (tmp_path / "compare" / "compare.html").exists()

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a red cat sings"}\n')
    proc = _command(
        "sora_jax.evaluate", f"--checkpoint={straight}", f"--out_dir={tmp_path}/bad",
        f"--prompts={prompts}",
    )  # fmt: skip
    assert proc.returncode == 2 and "cannot read ['cat', 'sings']" in proc.stderr, proc.stderr
    proc = _command(
        "sora_jax.evaluate", f"--checkpoint={straight}", f"--out_dir={tmp_path}/bad",
        "--sizes=9x30x32",
    )  # fmt: skip
    assert proc.returncode == 2 and "multiples of" in proc.stderr, proc.stderr
    proc = _command(
        "sora_jax.evaluate", f"--checkpoint={straight}", f"--out_dir={tmp_path}/bad",
        "--suite=default", f"--prompts={prompts}",
    )  # fmt: skip
    assert proc.returncode == 2 and "alternatives" in proc.stderr, proc.stderr
    for flag, message in [
        ("--cfg_interval=0.5", "0 <= lo < hi <= 1"),
        ("--steps=0", "--steps must be at least 1"),
        ("--batch_size=0", "--batch_size must be at least 1"),
        ("--checkpoint_step=3", "no checkpoint for step 3"),
    ]:
        proc = _command(
            "sora_jax.evaluate", f"--checkpoint={straight}", f"--out_dir={tmp_path}/bad", flag
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "bad").exists()


def test_latent_cache_holds_tails_encoded_alone(runs):
    """The tail conditioning is the clip's last frames encoded on their own: no leak of the
    earlier frames through the causal encoder, unlike the clip's own last latent frames."""
    root, _, _, _, _ = runs
    source = latent_cache.LatentCacheSource(root / "cache")
    meta = source.meta
    assert meta["tail_lengths"] == [1, 2]
    model, params, _ = vae_lib.load_vae(meta["vae_workdir"], meta["vae_step"])
    clip = sources.make_source(_dit_config(root / "vae", root / "cache").data)[5]
    example = source[5]
    for k, frames in ((1, 1), (2, 5)):
        alone = np.asarray(vae_lib.encode(model, params, clip["video"][None, -frames:]))[0]
        np.testing.assert_allclose(example[f"tail{k}"], alone, atol=2e-3, rtol=2e-3)
    assert not np.allclose(example["tail1"], example["latent"][-1:], atol=1e-2)
    # The head needs no such care: the causal encoding of the first frames is the clip's own.
    head = np.asarray(vae_lib.encode(model, params, clip["video"][None, :5]))[0]
    np.testing.assert_allclose(example["latent"][:2], head, atol=2e-3, rtol=2e-3)


def test_generate_every_task(runs, tmp_path):
    """One prompts file with every task; the given frames come back where the task keeps them."""
    _, straight, _, _, _ = runs
    first = tmp_path / "first.png"
    clip = tmp_path / "clip.mp4"
    y, x = np.mgrid[:32, :32]
    video = np.stack([np.stack([7 * y + 4 * t, 8 * x, 128 + 0 * x], -1) for t in range(9)]).astype(
        np.uint8
    )  # smooth, so the mp4 round trips stay close
    Image.fromarray(video[0]).save(first)
    write_video(clip, video, fps=8)
    lines = [
        {"task": "t2v", "frames": 1},
        {"task": "i2v", "image": str(first)},
        {"task": "extend", "video": str(clip), "direction": "forward"},
        {"task": "extend", "video": str(clip), "direction": "backward"},
        {"task": "interpolate", "image": str(first), "end_video": str(clip)},
        {"task": "loop"},
        {"task": "v2v", "video": str(clip), "strength": 0.5},
        {"task": "t2v", "frames": 30},
    ]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": "a red circle", **x}) + "\n" for x in lines))
    proc = _generate(
        f"--checkpoint={straight}", f"--prompts={prompts}", f"--out_dir={tmp_path}/out",
        "--steps=1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    frames = {i: json.loads((out / f"{i:04d}.json").read_text())["frames"] for i in range(8)}
    # image; 9-frame clip; the video + 9 - 5 new frames either way; 9 + the 8 after the end;
    # a 9-frame clip minus its repeated last frame; the video's length; exactly 30 frames.
    assert frames == {0: 1, 1: 9, 2: 13, 3: 13, 4: 17, 5: 8, 6: 9, 7: 30}
    assert np.asarray(Image.open(out / "0000.png")).shape == (32, 32, 3)
    forward, _ = read_video(out / "0002.mp4")
    backward, _ = read_video(out / "0003.mp4")
    given, _ = read_video(clip)  # the mp4 round trip, as the outputs went through it
    for kept in (forward[:9], backward[-9:]):
        assert np.mean(np.abs(kept.astype(float) - given)) < 3.0
    record = json.loads((out / "0006.json").read_text())
    assert record["task"] == "v2v" and record["strength"] == 0.5 and record["video"]


def test_packed_training_on_mixed_shapes(runs, monkeypatch):
    """Clips of three shapes (an image among them) packed into rows of one length: it trains,
    here from the frame-correlated noise prior."""
    root, _, _, _, _ = runs
    config = _dit_config(root / "vae", root / "cache_mixed", steps=2)
    config.diffusion.frame_noise_correlation = 0.5
    drawn = _record_prior_noise(monkeypatch)
    config.data.sizes = ((9, 32, 32), (1, 32, 32), (5, 32, 48))
    config.packing.enabled = True
    config.packing.seq_len = 48  # 9x32x32 -> 12 tokens + 8 of tails; 5x32x48 -> 12 + 6
    config.packing.max_clips = 4
    config.data.num_clips = 40  # enough for 8 rows (one per fake device)
    config.sample_every = 100
    result = train.train_and_evaluate(config, str(root / "packed"))
    assert result["step"] == 2 and np.isfinite(result["loss"]) and 0.3 < result["fill"] <= 1.0
    # The packed loss, then the run's closing samples: both from the run's prior.
    assert drawn == [(0.5, True), (0.5, False)]
    meta = latent_cache.read_meta(root / "cache_mixed")
    shapes = set(latent_cache.LatentCacheSource(root / "cache_mixed").latent_shapes)
    assert meta["num_clips"] == 40 and shapes == {(3, 4, 4, 16), (1, 4, 4, 16), (2, 4, 6, 16)}


def _record_prior_noise(monkeypatch) -> list[tuple[float, bool]]:
    """(frame correlation, segments given) of every `prior_noise` call traced from here on."""
    drawn, original = [], rectified_flow.prior_noise

    def recording(rng, shape, coords=None, frame_correlation=0.0, segments=None):
        drawn.append((frame_correlation, segments is not None))
        return original(rng, shape, coords, frame_correlation, segments)

    monkeypatch.setattr(rectified_flow, "prior_noise", recording)
    return drawn


def test_the_runs_noise_prior_reaches_training_and_sampling(runs, monkeypatch):
    _, straight, _, _, _ = runs
    pipe = dit_lib.load_pipeline(straight)
    assert pipe.frame_correlation == 0.0
    # A run saved before the field existed trained on independent noise.
    assert dit_lib.noise_prior_correlation(ml_collections.ConfigDict({"t_mean": 0.0})) == 0.0
    drawn = _record_prior_noise(monkeypatch)
    pipe.config.diffusion.frame_noise_correlation = 0.7
    prompts = ["a small red circle moves left on a black background"]
    pipe.generate(prompts, frames=9, height=32, width=32, steps=1, cfg=1.0, seed=0)
    assert drawn == [(0.7, False)]  # the sampler's start
    loss_fn = dit_lib.make_loss_fn(pipe.model, pipe.text, pipe.config.diffusion, pipe.stats)
    batch = {"latent": jnp.zeros(pipe.latent_shape(2, 9, 32, 32)), **pipe.text_batch(prompts * 2)}
    loss, _ = loss_fn(pipe.params, batch, jax.random.key(0))
    assert np.isfinite(loss) and drawn[-1] == (0.7, False)
    coarse = dit_lib.make_model({**pipe.config.model.to_dict(), "variant": "micro/3x2x2"})
    with pytest.raises(ValueError, match="temporal patch size of 1"):
        dit_lib.make_loss_fn(coarse, pipe.text, pipe.config.diffusion, pipe.stats)
    pipe.config.diffusion.frame_noise_correlation = 1.0
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        dit_lib.make_loss_fn(pipe.model, pipe.text, pipe.config.diffusion, pipe.stats)


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_export_writes_a_bundle_that_samples_like_the_run(runs, tmp_path, monkeypatch):
    _, straight, _, _, _ = runs
    out = tmp_path / "bundle"
    proc = _command("sora_jax.export", f"--checkpoint={straight}", f"--bundle={out}")
    assert proc.returncode == 0, proc.stderr
    assert "dit_ema:" in proc.stdout and "DiT step 4 + VAE step 1" in proc.stdout
    run, shipped = dit_lib.load_pipeline(straight), dit_lib.load_pipeline(out)
    assert shipped.step == 4 and shipped.config.to_dict() == run.config.to_dict()
    _assert_trees_equal(run.params, shipped.params)
    _assert_trees_equal(run.vae_params, shipped.vae_params)
    np.testing.assert_array_equal(run.stats[1], shipped.stats[1])
    sample = dict(frames=9, height=32, width=32, steps=2, cfg=2.0, seed=5)
    prompts = ["a big blue square moves up on a white background"]
    expected = run.generate(prompts, **sample)
    np.testing.assert_array_equal(shipped.generate(prompts, **sample), expected)
    # Sampler options reach the sampler (a 4-step model's velocity barely depends on t, so
    # they are checked where they are passed; samplers' own tests check what they do).
    seen, guided = [], []
    original, guidance = dit_lib.sample_latents, samplers.cfg_velocity_batched
    monkeypatch.setattr(
        dit_lib, "sample_latents", lambda *a, **k: seen.append(k) or original(*a, **k)
    )
    monkeypatch.setattr(
        samplers, "cfg_velocity_batched", lambda *a: guided.append(a[2:]) or guidance(*a)
    )
    whole = shipped.generate(prompts, **sample, cfg_interval=(0.0, 1.0), shift=3.0)
    assert seen[-1]["cfg_interval"] == (0.0, 1.0) and seen[-1]["shift"] == 3.0
    assert guided[-1] == ((0.0, 1.0),)  # traced anew (new static arguments): reached guidance
    shipped.generate(prompts, **sample)
    assert seen[-1]["cfg_interval"] is None and seen[-1]["shift"] == 1.0  # the run's at 64 tokens
    assert shipped.default_shift(9, 32, 32) == 1.0
    assert whole.shape == expected.shape
    # The demo runs on a bundle: held-out text to video at two sizes and every task, a gallery.
    proc = _command(
        "sora_jax.demo", f"--checkpoint={out}", f"--out_dir={tmp_path}/demo", "--num_prompts=2",
        "--num_task_clips=1", "--steps=1", "--tasks=i2v,loop",  # the eval test runs them all
        "--cfg=7", "--sampler=heun",  # the sampler flags of generate and eval
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert report["settings"]["cfg"] == 7.0 and report["settings"]["sampler"] == "heun"
    proc = _command(
        "sora_jax.demo", f"--checkpoint={out}", f"--out_dir={tmp_path}/demo2", "--checkpoint_step=2"
    )
    assert proc.returncode == 2 and "holds the DiT of step 4, not step 2" in proc.stderr
    assert not (tmp_path / "demo2").exists()
    assert set(report["t2v"]) == {"heldout_9x32x32", "heldout_9x16x32"}
    assert list(report["tasks"]) == ["i2v", "loop"]
    assert (tmp_path / "demo" / "index.html").read_text().count('class="card"') == 4 + 2
    # float16 storage halves the files and moves each weight by at most its rounding.
    half = export_lib.export(straight, tmp_path / "half", dtype="float16")
    assert half["dtype"] == "float16" and half["params"] == bundle.read_meta(out)["params"]
    small = dit_lib.load_pipeline(tmp_path / "half").params
    for x, y in zip(jax.tree.leaves(run.params), jax.tree.leaves(small), strict=True):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-3, atol=1e-7)
        assert np.asarray(y).dtype == np.float32

    (out / "MODEL_CARD.md").write_text("kept")
    export_lib.export(straight, out)  # replaces a bundle, keeps its card
    assert (out / "MODEL_CARD.md").read_text() == "kept"
    with pytest.raises(checkpoints.CheckpointError, match="not a bundle"):
        export_lib.export(straight, tmp_path)  # an ordinary directory is never replaced
    weights = out / "dit_ema.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    with pytest.raises(checkpoints.CheckpointError, match="sha256"):
        dit_lib.load_pipeline(out)
    with pytest.raises(checkpoints.CheckpointError, match="holds the DiT of step 4"):
        dit_lib.load_pipeline(tmp_path / "half", step=3)


def test_export_ships_a_decoder_fine_tune_with_the_runs_encoder(runs, tmp_path):
    _, straight, _, _, _ = runs
    ref = dit_lib.read_vae_ref(straight)
    _, params, config = vae_lib.load_vae(ref["workdir"], ref["step"])
    nudged = lambda tree: jax.tree.map(lambda x: np.asarray(x) + 0.5, tree)  # noqa: E731
    finer = {**params, "decoder": nudged(params["decoder"])}
    meta = {"vae_config": config.to_dict(), "vae_step": 9}
    bundle.write(tmp_path / "finer", meta, {bundle.VAE: finer})
    proc = _command(
        "sora_jax.export", f"--checkpoint={straight}", f"--bundle={tmp_path}/out",
        f"--vae={tmp_path}/finer",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "DiT step 4 + VAE step 9" in proc.stdout
    shipped = dit_lib.load_pipeline(tmp_path / "out")
    _assert_trees_equal(shipped.vae_params, finer)
    assert bundle.read_meta(tmp_path / "out")["latent_std"] == ref["latent_std"]

    # A decoder with a pixel head (models.vae.PixelHead) keeps the encoder too.
    headed_config = ml_collections.ConfigDict(config.to_dict())
    headed_config.model.pixel_head = 4
    frames, height, width = config.data.sizes[0]
    fresh = vae_lib.make_model(headed_config.model).init(
        jax.random.key(0), np.zeros((1, frames, height, width, 3), np.float32)
    )["params"]
    headed = vae_lib.with_new_pixel_head(nn.unbox(fresh), finer)
    headed_meta = {"vae_config": headed_config.to_dict(), "vae_step": 9}
    bundle.write(tmp_path / "headed", headed_meta, {bundle.VAE: headed})
    export_lib.export(straight, tmp_path / "out_headed", vae=tmp_path / "headed")
    assert "pixel_head" in dit_lib.load_pipeline(tmp_path / "out_headed").vae_params["decoder"]

    # A DiT bundle (whose run may be gone) takes a decoder fine-tune of its own VAE too, in
    # place: the same DiT, statistics, DiT log and model card, the new decoder and its log.
    # `finer` is float32 (a fine-tune of the run's VAE); the float16 bundle holds its VAE
    # rounded, and the encoders are compared at that precision.
    plain = tmp_path / "plain"
    export_lib.export(straight, plain, dtype="float16")
    (plain / "MODEL_CARD.md").write_text("card")
    before = dit_lib.load_pipeline(plain)
    encoders = zip(
        jax.tree.leaves(before.vae_params["encoder"]),
        jax.tree.leaves(params["encoder"]),
        strict=True,
    )
    assert not all(np.array_equal(a, b) for a, b in encoders)  # the run's, rounded to float16
    export_lib.export(plain, plain, dtype="float16", vae=tmp_path / "finer")
    again = dit_lib.load_pipeline(plain)
    _assert_trees_equal(again.params, before.params)
    as_float16 = lambda tree: jax.tree.map(lambda x: np.float32(np.float16(x)), tree)  # noqa: E731
    _assert_trees_equal(again.vae_params, as_float16(finer))
    again_meta = bundle.read_meta(plain)
    assert (again_meta["dit_step"], again_meta["vae_step"]) == (4, 9)
    assert again_meta["latent_std"] == ref["latent_std"]
    dit_log = (plain / "logs" / "dit" / "metrics.jsonl").read_text()
    assert dit_log == (straight / "metrics.jsonl").read_text()
    assert not (plain / "logs" / "vae").exists()  # `finer` carries no log; the run's VAE's went
    assert (plain / "MODEL_CARD.md").read_text() == "card"

    other = {**params, "encoder": nudged(params["encoder"])}
    bundle.write(tmp_path / "other", meta, {bundle.VAE: other})
    refusal = "not the one the DiT was trained on .step 1 of"
    with pytest.raises(checkpoints.CheckpointError, match=refusal):
        export_lib.export(straight, tmp_path / "refused", vae=tmp_path / "other")
    # Against the float16 bundle: an encoder that differs after rounding is refused too.
    other16 = {**before.vae_params, "encoder": nudged(before.vae_params["encoder"])}
    bundle.write(tmp_path / "other16", meta, {bundle.VAE: other16}, dtype=np.float16)
    with pytest.raises(checkpoints.CheckpointError, match="not the one the DiT was trained on"):
        export_lib.export(plain, tmp_path / "refused", vae=tmp_path / "other16")
    with pytest.raises(checkpoints.CheckpointError, match="needs a `train` run"):
        export_lib.export(ref["workdir"], tmp_path / "refused", vae=tmp_path / "finer")
    for source, vae in [(plain, None), (tmp_path / "finer", tmp_path / "finer")]:
        with pytest.raises(checkpoints.CheckpointError, match="is a bundle already"):
            export_lib.export(source, tmp_path / "refused", vae=vae)
    assert not (tmp_path / "refused").exists()


def test_training_starts_from_a_bundle(runs, tmp_path, caplog):
    """`init_from`: with a zero learning rate one step later the params are still the bundle's."""
    root, straight, _, _, _ = runs
    shipped = tmp_path / "bundle"
    export_lib.export(straight, shipped)
    run = dit_lib.load_pipeline(shipped)
    vae_config = config_lib.load_config(
        "configs/vae_tiny.py:variant=micro/t4s8c16,batch=8,steps=1,fixed,lpips=0"
    )
    vae_config.data.sizes = SIZES
    vae_config.optimizer.learning_rate = 0.0
    vae_config.init_from = str(shipped)
    train_vae.train_and_evaluate(vae_config, str(tmp_path / "vae"))
    _, vae_params, _ = vae_lib.load_vae(tmp_path / "vae")
    _assert_trees_equal(vae_params, run.vae_params)

    config = _dit_config(shipped, tmp_path / "cache", steps=1)  # the bundle's VAE, too
    config.optimizer.learning_rate = 0.0
    config.init_from = str(shipped)
    config.sample_every = 100
    config.diffusion.frame_noise_correlation = 0.3  # a prior the bundle was not trained on
    with caplog.at_level(logging.WARNING):
        train.train_and_evaluate(config, str(tmp_path / "dit"))
    assert "noise of frame correlation 0.0 and this run uses 0.3" in caplog.text
    assert dit_lib.read_vae_ref(tmp_path / "dit")["step"] == 1
    started = dit_lib.load_pipeline(tmp_path / "dit").params
    # The EMA's decay * p + (1 - decay) * p may round in the last bit.
    for x, y in zip(jax.tree.leaves(started), jax.tree.leaves(run.params), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6)

    # A run on a bundle's VAE exports with that VAE's training log, carried from the bundle.
    export_lib.export(tmp_path / "dit", tmp_path / "again")
    vae_log = "logs/vae/metrics.jsonl"
    assert (shipped / vae_log).is_file()
    assert (tmp_path / "again" / vae_log).read_bytes() == (shipped / vae_log).read_bytes()

    # A finer patch starts from the bundle's params with the patch layers resized (test_dit has
    # the equivalence); a coarser patch or other blocks are refused, naming the source's fields.
    variant, config.model.variant = config.model.variant, "micro/1x1x1"
    train.train_and_evaluate(config, str(tmp_path / "finer"))
    resized = dit_lib._finer_patches(run.params, run.model.patch_size, (1, 1, 1))
    started = dit_lib.load_pipeline(tmp_path / "finer").params
    for x, y in zip(jax.tree.leaves(started), jax.tree.leaves(resized), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
    refusals = {
        "micro/1x4x4": "cannot be resized.*" + re.escape(f"variant={variant})") + "$",
        "tiny/1x2x2": f"do not fit.*variant={variant}$",
        "tiny/1x1x1": f"do not fit.*variant={variant}$",
    }
    for other, refusal in refusals.items():
        config.model.variant = other
        with pytest.raises(checkpoints.CheckpointError, match=refusal):
            train.train_and_evaluate(config, str(tmp_path / other.replace("/", "_")))
    # Resized patches with another field: the hint names that field, not the variant.
    config.model.variant, config.model.pooled_text = "micro/1x1x1", True
    with pytest.raises(checkpoints.CheckpointError, match="with --config.model.pooled_text=False$"):
        train.train_and_evaluate(config, str(tmp_path / "pooled"))
    config.model.variant = variant
    with pytest.raises(checkpoints.CheckpointError, match="with --config.model.pooled_text=False$"):
        train.train_and_evaluate(config, str(tmp_path / "pooled_same_patch"))
    config.model.pooled_text, config.model.absolute_position = False, True
    with pytest.raises(
        checkpoints.CheckpointError, match="--config.model.absolute_position=False$"
    ):
        train.train_and_evaluate(config, str(tmp_path / "placed"))
