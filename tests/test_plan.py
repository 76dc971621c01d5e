"""`sora-jax plan`: topologies, the FLOP count of scanned layers, per-device state, the command."""

import json
import subprocess
import sys

import jax
import pytest

from sora_jax import config_lib, dit_lib, plan, sharding, topology
from sora_jax.text import encoders

LATENT = (8, 5, 8, 8, 16)


def _config(variant="micro/1x2x2"):
    return config_lib.load_config(f"configs/dit_tiny.py:variant={variant},batch=8,text=small")


def test_topology_names(monkeypatch):
    monkeypatch.setattr(topology, "libtpu_available", lambda: False)
    assert topology.cpu_devices_needed("v5p-128") == 64  # 4x4x4 chips, one device each
    assert topology.cpu_devices_needed("v4-8") == 8  # 2x2x1 chips, two TensorCores each
    assert topology.cpu_devices_needed("v5e:4x8") == 32
    assert topology.cpu_devices_needed("cpu:3") == 3
    target = topology.resolve("v5p-8")
    assert len(target.devices) == 4 and target.compiler == "cpu"
    assert target.spec.hbm_bytes == 95 * topology.GIB and "libtpu" in target.note
    with pytest.raises(ValueError, match="unknown topology 'v9-1'"):
        topology.resolve("v9-1")
    with pytest.raises(ValueError, match="has 8 CPU devices but the plan needs 64"):
        topology.resolve("v5p-128")


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="frames must be 1 \\+ 4k"):
        plan.parse_video("16x64x64", (4, 8, 8), (1, 2, 2))
    with pytest.raises(ValueError, match="multiples of 16"):
        plan.parse_video("17x72x64", (4, 8, 8), (1, 2, 2))
    assert plan.parse_video("17x64x48", (4, 8, 8), (1, 2, 2)) == (5, 8, 6)
    with pytest.raises(ValueError, match="bad mesh"):
        plan.parse_mesh("fsdp:8")
    with pytest.raises(ValueError, match="bad --vae"):
        plan.parse_vae("4x8")


def test_layer_flops_are_counted_once_per_layer():
    """XLA counts a scanned layer once; the plan's extrapolation from depths 1 and 2 equals the
    cost of the same step unrolled to the full depth."""
    config = _config("tiny/1x2x2")
    mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
    text = encoders.make_text_encoder(config.model.text)
    lower = dit_lib.lower_train_step
    depth = dit_lib.make_model(config.model).depth
    unrolled = lower(config, mesh, LATENT, text=text, depth=depth).cost_analysis()["flops"]
    scanned = lower(config, mesh, LATENT, text=text).cost_analysis()["flops"]
    one_layer = lower(config, mesh, LATENT, text=text, depth=1).cost_analysis()["flops"]
    planned = plan.step_flops(lower, config, LATENT, text, depth)
    assert planned == pytest.approx(unrolled, rel=1e-4)  # the optimizer adds a few non-linear ops
    assert scanned == pytest.approx(one_layer, rel=1e-2) and scanned < 0.6 * unrolled


def test_blockwise_attention_flops_are_counted_whole():
    """Blockwise attention loops over blocks, which XLA's cost analysis counts once; the plan
    counts the step with one block: XLA attention's FLOPs plus the backward pass's recompute."""
    config = _config()  # 80 tokens a clip
    config.model.attention_block = 16
    text = encoders.make_text_encoder(config.model.text)
    lower, depth = dit_lib.lower_train_step, dit_lib.make_model(config.model).depth
    xla = plan.step_flops(lower, config, LATENT, text, depth)
    config.model.attention_impl = "blockwise"
    blockwise = plan.step_flops(lower, config, LATENT, text, depth)
    mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
    looped = lower(config, mesh, LATENT, text=text, depth=depth).cost_analysis()["flops"]
    assert looped < xla < blockwise < 1.5 * xla


def test_state_bytes_fall_as_one_over_fsdp():
    config = _config("tiny/1x2x2")
    model, text, optimizer = dit_lib.abstract_parts(config, None, None)
    per_device = {}
    for fsdp in (1, 2, 8):
        mesh = sharding.make_mesh({"data": 8 // fsdp, "fsdp": fsdp})
        state, _ = dit_lib.abstract_state(model, text, optimizer, (1, *LATENT[1:]), mesh)
        per_device[fsdp] = plan.state_bytes_per_device(state)
    assert per_device[1] / per_device[2] == pytest.approx(2, rel=0.02)
    assert per_device[1] / per_device[8] == pytest.approx(8, rel=0.05)


def test_plan_command(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", "from sora_jax.cli import main; main()", "plan",
         "--config", "configs/dit_tiny.py:variant=micro/1x2x2,batch=8,text=small",
         "--topology", "cpu:8", "--mesh", "data=2,fsdp=4", "--clips", "17x64x64,9x32x64",
         "--vae", "4x4x4", "--json", str(tmp_path / "plan.json"),
         "--markdown", str(tmp_path / "plan.md")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "plan.json").read_text())
    assert [r["latent"] for r in rows] == ["5x16x16x16", "3x8x16x16"]
    for row in rows:
        assert row["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1, "sequence": 1}
        assert row["sample"]["batch"] == 8 and row["train"]["batch"] == 8
        for step in (row["train"], row["sample"]):
            assert 0 < step["argument_bytes"] <= step["peak_bytes"] and step["flops"] > 0
    assert [r["tokens_per_clip"] for r in rows] == [320, 96]  # 2x2 patches
    assert rows[0]["train"]["flops"] > rows[1]["train"]["flops"]
    table = (tmp_path / "plan.md").read_text()
    assert table.count("| micro/1x2x2 |") == 2
    bad = subprocess.run(
        [sys.executable, "-c", "from sora_jax.cli import main; main()", "plan",
         "--config", "configs/dit_tiny.py", "--topology", "v9-1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("sora-jax plan: error: unknown topology")


def test_a_step_the_compiler_refuses_is_reported_as_oom():
    """The TPU compiler raises instead of returning memory stats when temporaries exceed HBM;
    the plan reads the size from its message."""

    class Refused:
        def cost_analysis(self):
            return {"flops": 10.0}

        def compile(self):
            raise jax.errors.JaxRuntimeError(
                "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
                "temporaries (1.50T) exceeds available HBM (95.74G)."
            )

    def lower(config, mesh, shape, text=None, depth=None):
        return Refused()

    step = plan.plan_step(lower, _config(), None, (1,), None, depth=4)
    assert step.argument_bytes is None and step.refused.startswith("RESOURCE_EXHAUSTED")
    assert step.temp_bytes == int(1.5 * 1024**4) and step.flops == 10.0
