"""train-vae end to end on a micro VAE: checkpoints, resume, logs, samples, eval-vae, errors."""

import json
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import linen as nn

from sora_jax import (
    bundle,
    checkpoints,
    config_lib,
    dit_lib,
    eval_vae,
    export_lib,
    train_vae,
    vae_lib,
)
from sora_jax.data.shapes_world.world import generate_clip
from sora_jax.metric_writers import read_metrics

SHIPPED_VAE = pathlib.Path(__file__).parents[1] / "checkpoints" / "vae_tiny"


def _config(steps):
    config = config_lib.load_config(
        f"configs/vae_tiny.py:variant=micro/t4s8c16,batch=8,steps={steps},fixed"
    )
    config.data.sizes = ((9, 32, 32),)
    config.log_every = 1
    config.checkpoint_every = 2
    config.sample_every = 2
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("vae_run")
    first = train_vae.train_and_evaluate(_config(2), str(workdir))
    resumed = train_vae.train_and_evaluate(_config(4), str(workdir))
    return workdir, first, resumed


def test_resume_continues_from_the_checkpoint(run):
    workdir, first, resumed = run
    assert first["step"] == 2 and resumed["step"] == 4
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [2, 4]
    steps = [m["step"] for m in read_metrics(workdir) if "loss" in m]
    assert steps == [1, 2, 3, 4]  # the resumed run logs steps 3, 4 and nothing twice
    assert all(
        np.isfinite(m["loss"]) and "lpips" in m for m in read_metrics(workdir) if "loss" in m
    )
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert (workdir / "samples" / "recon_0000004.gif").stat().st_size > 0


def test_data_iterator_is_saved_with_the_state(run):
    workdir, _, _ = run
    manager = checkpoints.make_manager(workdir, read_only=True)
    state = json.loads((manager.directory / "4" / "data" / "process_0-of-1.json").read_text())
    assert state["next_index"] == 4


def test_load_vae_and_eval(run, tmp_path):
    workdir, _, _ = run
    model, params, config = vae_lib.load_vae(workdir)
    assert config.model.variant == "micro/t4s8c16"
    clip = generate_clip(0, split="heldout", frames=9, height=32, width=32)
    videos = [
        ("a", np.full((9, 32, 40, 3), 128, np.uint8)),
        ("b", np.zeros((10, 33, 40, 3), np.uint8)),
        ("clip", clip["video"]),
    ]
    captions = {"clip": clip["caption"]}
    report = eval_vae.evaluate(str(workdir), videos, tmp_path, num_samples=1, captions=captions)
    assert report["num_videos"] == 3 and report["compression_ratio"] == 48.0
    # The probe reads only the captioned video (a one-step VAE's blur loses most attributes).
    assert report["probe"]["num_videos"] == 1 and "probe_adherence" not in report["videos"][0]
    assert 0.0 <= report["videos"][2]["probe_adherence"] < 1.0
    assert report["videos"][1]["shape"] == [9, 32, 40, 3]  # trimmed to 1 + 4k, cropped to 8s
    assert (tmp_path / "report.json").exists() and (tmp_path / "recon_000.gif").exists()
    assert all(0 <= v["ssim"] <= 1 and v["lpips"] >= 0 for v in report["videos"])
    assert len(report["psnr_by_frame"]) == 9  # the longest video after trimming
    assert set(report["psnr_by_region"]) == {
        "psnr_edges",
        "psnr_flat",
        "edge_pixel_share",
        "edge_error_share",
    }


def test_a_vae_run_exports_as_a_vae_bundle(run, tmp_path):
    workdir, _, _ = run
    meta = export_lib.export(workdir, tmp_path / "half", dtype="float16")
    assert meta["vae_step"] == 4 and set(meta["params"]) == {bundle.VAE}
    assert (tmp_path / "half" / "logs" / "vae" / "metrics.jsonl").is_file()
    model, params, config = vae_lib.load_vae(tmp_path / "half")
    _, want, want_config = vae_lib.load_vae(workdir)
    assert config.to_dict() == want_config.to_dict() and vae_lib.latest_step(tmp_path / "half") == 4
    for got, expected in zip(jax.tree.leaves(params), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-6)
    clip = generate_clip(1, split="heldout", frames=9, height=32, width=32)["video"][None]
    diff = vae_lib.reconstruct(model, params, clip).astype(int) - vae_lib.reconstruct(
        model, want, clip
    )
    assert np.abs(diff).max() <= 2  # float16 weights move a uint8 pixel by 2 levels at most

    export_lib.export(workdir, tmp_path / "step2", step=2)
    _, at_2, _ = vae_lib.load_vae(tmp_path / "step2")
    _, want_2, _ = vae_lib.load_vae(workdir, step=2)
    assert vae_lib.latest_step(tmp_path / "step2") == 2
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, at_2, want_2)))
    with pytest.raises(checkpoints.CheckpointError, match="holds no DiT"):
        dit_lib.load_pipeline(tmp_path / "half")


def test_the_shipped_vae_bundle_reconstructs_held_out_clips():
    """checkpoints/vae_tiny is the README's 32.4 dB VAE (a wrong file or a broken loader would
    read lower)."""
    model, params, config = vae_lib.load_vae(SHIPPED_VAE)
    assert config.model.variant == "tiny/t4s4c16"
    assert vae_lib.latest_step(SHIPPED_VAE) == 5000  # the decoder fine-tune's steps
    clips = np.stack(
        [generate_clip(i, split="heldout", frames=17, height=64, width=64)["video"] for i in (0, 1)]
    )
    recon = np.asarray(vae_lib.reconstruct(model, params, clips))
    mse = np.mean((recon.astype(np.float64) - clips) ** 2)
    # 34.5 dB; 34.3 with the decoder fine-tuned at the default loss weights (`vae_dec`), 33.0
    # before any decoder fine-tune, and the 1,840-step VAE 29.2.
    assert 10 * np.log10(255**2 / mse) > 34.4
    captioner = SHIPPED_VAE.parent / "captioner"  # a bundle without a VAE: one clear error
    with pytest.raises(checkpoints.CheckpointError, match="holds no VAE"):
        vae_lib.load_vae(captioner)
    with pytest.raises(checkpoints.CheckpointError, match="holds no DiT"):
        dit_lib.load_pipeline(captioner)


def test_psnr_by_frame_pools_the_videos_that_have_each_frame():
    errors = [np.array([65.025, 6.5025]), np.array([65.025])]
    assert eval_vae.psnr_by_frame(errors) == [30.0, 40.0]
    assert eval_vae.psnr_by_frame([np.zeros(2)]) == [100.0, 100.0]  # exact frames are capped


def test_psnr_by_region_pools_the_squared_errors_of_all_videos():
    errors = [
        {"edges": 300.0, "edge_values": 3, "flat": 0.0, "flat_values": 6},
        {"edges": 0.0, "edge_values": 0, "flat": 60.0, "flat_values": 6},
    ]
    assert eval_vae.psnr_by_region(errors) == {
        "psnr_edges": round(10 * np.log10(255**2 / 100), 4),
        "psnr_flat": round(10 * np.log10(255**2 / 5), 4),
        "edge_pixel_share": 0.2,
        "edge_error_share": round(300 / 360, 4),
    }
    flat_only = eval_vae.psnr_by_region([errors[1]])
    assert "psnr_edges" not in flat_only and flat_only["edge_pixel_share"] == 0.0


def test_foreign_or_mismatched_checkpoints_are_refused(run, tmp_path):
    workdir, _, _ = run
    other = _config(6)
    other.model.variant = "micro/t4s8c8"
    with pytest.raises(checkpoints.CheckpointError, match="different config.model"):
        train_vae.train_and_evaluate(other, str(workdir))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(checkpoints.CheckpointError, match="refusing"):
        train_vae.train_and_evaluate(_config(2), str(tmp_path))
    with pytest.raises(checkpoints.CheckpointError):
        vae_lib.load_vae(tmp_path / "missing")


def test_cli_errors(tmp_path):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-c", "from sora_jax.cli import main; main()", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    missing = cli(
        "eval-vae",
        "--checkpoint",
        str(tmp_path / "none"),
        "--dataset",
        "shapes_world",
        "--out_dir",
        str(tmp_path / "out"),
    )
    assert missing.returncode == 2 and "no checkpoints under" in missing.stderr
    both = cli(
        "eval-vae",
        "--checkpoint",
        "x",
        "--dataset",
        "lavfi",
        "--videos",
        "y",
        "--out_dir",
        str(tmp_path / "out"),
    )
    assert both.returncode == 2 and "exactly one of --videos or --dataset" in both.stderr
    assert not (tmp_path / "out").exists()


def test_a_frozen_encoder_keeps_the_latent_space_while_the_decoder_trains(run, tmp_path):
    source, _, _ = run
    config = _config(2)
    config.init_from = str(source)
    config.freeze_encoder = True
    config.sample_every = 100  # no sample videos: not what this test is about
    train_vae.train_and_evaluate(config, str(tmp_path))
    _, before, _ = vae_lib.load_vae(source)
    _, after, _ = vae_lib.load_vae(tmp_path)
    for got, want in zip(
        jax.tree.leaves(after["encoder"]), jax.tree.leaves(before["encoder"]), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    pairs = zip(jax.tree.leaves(after["decoder"]), jax.tree.leaves(before["decoder"]), strict=True)
    assert any(np.any(got != want) for got, want in pairs)
    config.freeze_encoder = False
    with pytest.raises(checkpoints.CheckpointError, match="freeze_encoder on/off"):
        train_vae.train_and_evaluate(config, str(tmp_path))
    config.freeze_encoder, config.init_from = True, ""
    with pytest.raises(ValueError, match="give the VAE it comes from"):
        train_vae.train_and_evaluate(config, str(tmp_path / "fresh"))
    assert not (tmp_path / "fresh").exists()


def test_a_pixel_head_joins_a_trained_vae_without_changing_its_output(run, tmp_path):
    source, _, _ = run
    config = _config(2)
    config.model.pixel_head = 4
    config.init_from = str(source)
    config.freeze_encoder = True
    config.sample_every = 100
    old_model, old, _ = vae_lib.load_vae(source)
    new_model = vae_lib.make_model(config.model, conv_impl="xla")
    clip = vae_lib.to_unit_range(
        generate_clip(2, split="heldout", frames=9, height=32, width=32)["video"][None]
    )
    fresh = nn.unbox(jax.jit(new_model.init)(jax.random.key(0), clip)["params"])
    grafted = vae_lib.warm_start(fresh, source, shardings=None)
    recon = lambda model, params: model.apply({"params": params}, clip)[0]  # noqa: E731
    np.testing.assert_array_equal(recon(new_model, grafted), recon(old_model, old))
    train_vae.train_and_evaluate(config, str(tmp_path))
    model, after, saved = vae_lib.load_vae(tmp_path)
    assert model.pixel_head == 4 and saved.model.pixel_head == 4
    for got, want in zip(
        jax.tree.leaves(after["encoder"]), jax.tree.leaves(old["encoder"]), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    head = after["decoder"]["pixel_head"]
    assert np.any(head[sorted(head)[-1]]["kernel"])  # the head has started to correct


def test_a_run_saved_before_a_model_field_existed_still_resumes(run, tmp_path):
    assert vae_lib.model_fields({"variant": "micro/t4s8c16", "dtype": "float32"}) == dict(
        variant="micro/t4s8c16", dtype="float32", norm="rms", logvar_init=0.0, pixel_head=0
    )
    old = tmp_path / "old"
    shutil.copytree(run[0], old)
    config = _config(5)
    with config.unlocked():
        del config.model["pixel_head"]  # as configs were before the field: the same model
    assert train_vae.train_and_evaluate(config, str(old))["step"] == 5
    config = _config(6)
    config.model.pixel_head = 4  # a different model is still refused
    with pytest.raises(checkpoints.CheckpointError, match="different config.model"):
        train_vae.train_and_evaluate(config, str(old))


def test_a_frozen_encoder_gets_no_gradient_and_no_update_even_with_weight_decay():
    config = _config(10)
    config.loss.update(lpips=0.0, crop=(5, 16, 16))
    config.update(freeze_encoder=True)
    config.optimizer.update(weight_decay=0.1, warmup_steps=1)
    model = vae_lib.make_model(config.model, conv_impl="xla")  # compiles in a fraction of matmul's
    video = jax.random.randint(jax.random.key(0), (2, 5, 16, 16, 3), 0, 256).astype(np.uint8)
    params = vae_lib.init_params(model, config.loss, jax.random.key(1), video[:1] / 127.5 - 1)
    params = jax.tree.map(np.asarray, nn.unbox(params))
    loss_fn = vae_lib.make_loss_fn(model, config.loss, freeze_encoder=True)
    grads = jax.jit(jax.grad(lambda p: loss_fn(p, {"video": video}, jax.random.key(2), 0)[0]))(
        params
    )
    assert all(np.all(g == 0) for g in jax.tree.leaves(grads["encoder"]))
    assert any(np.any(g != 0) for g in jax.tree.leaves(grads["decoder"]))

    # The optimizer zeroes the encoder's updates whatever its gradient (weight decay included),
    # in the VAE's tree and in the {"vae", "disc"} tree of the adversarial loss.
    optimizer = vae_lib.make_optimizer(config)
    for tree in (params, {"vae": params, "disc": {"w": np.ones(3, np.float32)}}):
        state = optimizer.init(tree)
        for _ in range(2):
            updates, state = optimizer.update(jax.tree.map(np.ones_like, tree), state, tree)
        moved = vae_lib.autoencoder_params(updates)
        assert all(np.all(u == 0) for u in jax.tree.leaves(moved["encoder"]))
        others = [moved["decoder"], updates.get("disc", {})]
        assert all(np.all(u != 0) for u in jax.tree.leaves(others))


def test_adversarial_term_trains_the_discriminator_from_its_start_step(tmp_path):
    config = _config(3)
    config.loss.lpips = 0.0
    config.loss.adversarial = 0.5
    config.loss.adversarial_start = 2
    config.checkpoint_every = 1
    config.sample_every = 100  # no sample videos: not what this test is about
    train_vae.train_and_evaluate(config, str(tmp_path))
    states = {s: vae_lib.load_state(tmp_path, s)[1].params for s in (1, 2, 3)}
    assert set(states[1]) == {"vae", "disc"}

    def changed(a, b):
        pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        return any(np.any(x != y) for x, y in pairs)

    assert changed(states[1]["vae"], states[2]["vae"])
    assert not changed(states[1]["disc"], states[2]["disc"])  # step index 1 < start 2
    assert changed(states[2]["disc"], states[3]["disc"])
    logged = [m for m in read_metrics(tmp_path) if "loss" in m]
    assert all(np.isfinite(m["adv_discriminator"]) for m in logged)
    _, params, _ = vae_lib.load_vae(tmp_path)
    assert "disc" not in params and "encoder" in params
    config.loss.adversarial = 0.0
    config.total_steps = 4
    with pytest.raises(checkpoints.CheckpointError, match="adversarial on/off"):
        train_vae.train_and_evaluate(config, str(tmp_path))


def test_adversarial_gradients_reach_each_part_from_its_own_term():
    """Generator term -> VAE only (discriminator frozen); discriminator term -> discriminator
    only (reconstruction frozen)."""
    from sora_jax.models.discriminator import PatchDiscriminator

    config = _config(1)
    config.loss.update(l1=0.0, mse=0.0, kl=0.0, lpips=0.0, adversarial=0.7, adversarial_start=0)
    config.loss.crop = (5, 16, 16)
    model = vae_lib.make_model(config.model, conv_impl="xla")  # compiles in a fraction of matmul's
    video = jax.random.randint(jax.random.key(0), (2, 5, 16, 16, 3), 0, 256).astype(np.uint8)
    params = vae_lib.init_params(model, config.loss, jax.random.key(1), video[:1] / 127.5 - 1)
    params = jax.tree.map(np.asarray, nn.unbox(params))
    loss_fn = vae_lib.make_loss_fn(model, config.loss)
    rng = jax.random.key(2)
    grads = jax.jit(jax.grad(lambda p: loss_fn(p, {"video": video}, rng, 0)[0]))(params)

    # The same terms written out with the same posterior sample.
    judge = PatchDiscriminator(conv_impl=model.conv_impl).apply
    sample_rng, _, _ = jax.random.split(rng, 3)
    x = vae_lib.to_unit_range(video)

    def recon(vae_params):
        return model.apply({"params": vae_params}, x, sample_rng)[0]

    def generator_term(vae_params):
        return -0.7 * jax.numpy.mean(judge({"params": params["disc"]}, recon(vae_params)))

    def discriminator_term(disc_params):
        real = judge({"params": disc_params}, x)
        fake = judge({"params": disc_params}, recon(params["vae"]))
        return jax.numpy.mean(jax.nn.relu(1 - real)) + jax.numpy.mean(jax.nn.relu(1 + fake))

    expected = {"vae": jax.jit(jax.grad(generator_term))(params["vae"])}
    expected["disc"] = jax.jit(jax.grad(discriminator_term))(params["disc"])
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
