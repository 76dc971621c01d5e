"""`sora-jax plan`: will this config fit that pod, and how fast would it run? Answered from a CPU.

    sora-jax plan --config configs/dit_pod.py:variant=3B/1x2x2 --topology v5p-128 \\
        [--mesh data=1,fsdp=64] [--batch 64] [--clips 121x256x448] [--vae 4x8x8] [--mfu 0.4]

Compiles the real sharded train step, and one sampler step (a guided pair of DiT evaluations), for
the topology's devices ahead of time (`topology.py`: the TPU compiler via libtpu, else fake CPU
devices) and prints per device: argument memory (params, optimizer state, EMA and the batch
shard), temporary memory (activations, the compiler's scratch), their peak sum and whether it fits
in HBM; and per step: FLOPs as the compiler counts them (remat recompute included) and the step
time they take at the stated MFU. `cost_analysis` counts a scanned layer once, so a layer's FLOPs
are measured on the same step unrolled at depths 1 and 2 and multiplied out.

Comma-separated `--config.model.variant`-like sweeps: `--variants 1B/1x2x2,3B/1x2x2` and
`--clips 121x256x448,121x720x1280` plan every combination; `--markdown F` writes the table
(docs/scaling.md is made this way) and `--json F` every figure.
"""

import copy
import dataclasses
import math
import pathlib
import re
import time

import jax
import ml_collections
from absl import flags

from sora_jax import atomic, cli, dit_lib, sharding, topology, train_flags

_TOPOLOGY = flags.DEFINE_string(
    "topology", None, "A TPU slice (v5p-128, v5e-256, v5p:4x4x4, ...) or cpu:N fake devices."
)
_MESH = flags.DEFINE_string(
    "mesh", "", "Mesh degrees, e.g. data=1,fsdp=32,tensor=4 (default: the config's mesh)."
)
_BATCH = flags.DEFINE_integer("batch", 0, "Global batch of clips (default: the config's).")
_VARIANTS = flags.DEFINE_list("variants", [], "DiT variants to plan (default: the config's).")
_CLIPS = flags.DEFINE_list(
    "clips", [], "Clip shapes FRAMESxHEIGHTxWIDTH in pixels (default: the config's first size)."
)
_VAE = flags.DEFINE_string("vae", "4x8x8", "The VAE's compression, temporal x height x width.")
_LATENT_CHANNELS = flags.DEFINE_integer("latent_channels", 16, "The VAE's latent channels.")
_MFU = flags.DEFINE_float("mfu", 0.4, "Model FLOP utilisation the step-time projection assumes.")
_SAMPLE = flags.DEFINE_boolean(
    "sample", True, "Also plan one sampler step (one clip per batch shard)."
)
_MARKDOWN = flags.DEFINE_string("markdown", None, "Write the results as a markdown table here.")
_JSON = flags.DEFINE_string("json", None, "Write every figure as JSON here.")


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """One compiled step on one device."""

    argument_bytes: int | None  # None: the compiler gave up (see `refused`)
    temp_bytes: int
    peak_bytes: int  # arguments + outputs not aliased to them + temporaries
    flops: float  # the whole step over all devices, every layer counted
    compile_s: float
    refused: str | None = None  # the TPU compiler's out-of-memory message, if it refused


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a plan holds fixed across its rows (the command's flags)."""

    mesh: dict  # mesh degrees
    batch: int  # global train batch; 0: the config's
    vae: tuple[int, int, int] = (4, 8, 8)  # temporal x height x width compression
    latent_channels: int = 16
    mfu: float = 0.4
    sample: bool = True


def parse_video(text: str, vae: tuple[int, int, int], patch: tuple[int, ...]) -> tuple[int, ...]:
    """'121x256x448' -> latent frames, rows, columns, checked against the VAE and the patch."""
    try:
        frames, height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"bad video shape {text!r}; expected FRAMESxHEIGHTxWIDTH") from None
    tc, hc, wc = vae
    if (frames - 1) % tc:
        raise ValueError(f"{text}: frames must be 1 + {tc}k for a {tc}x temporal VAE")
    t, h, w = 1 + (frames - 1) // tc, height // hc, width // wc
    if height % (hc * patch[1]) or width % (wc * patch[2]) or t % patch[0]:
        raise ValueError(
            f"{text}: height and width must be multiples of {hc * patch[1]} and "
            f"{wc * patch[2]}, latent frames of {patch[0]} (VAE {'x'.join(map(str, vae))}, patch "
            f"{'x'.join(map(str, patch))})"
        )
    return t, h, w


def parse_vae(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"bad --vae {text!r}; expected TEMPORALxHEIGHTxWIDTH, e.g. 4x8x8")
    return tuple(int(p) for p in parts)


def parse_mesh(text: str) -> dict[str, int]:
    degrees = {}
    for item in filter(None, text.split(",")):
        name, sep, value = item.partition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            raise ValueError(f"bad mesh {text!r}; expected e.g. data=1,fsdp=32,tensor=4")
        degrees[name.strip()] = int(value)
    return degrees


def plan_step(lower, config, mesh, shape, text, depth: int) -> StepPlan:
    """Compiles `lower(...)` (a `dit_lib.lower_*_step`) and reads its memory and FLOPs."""
    flops = step_flops(lower, config, shape, text, depth)
    start = time.perf_counter()
    try:
        compiled = lower(config, mesh, shape, text=text).compile()
    except jax.errors.JaxRuntimeError as e:
        # The TPU compiler refuses a program whose temporaries exceed HBM, saying how much.
        needed = re.search(r"temporaries \(([\d.]+)([KMGT])\)", str(e))
        if "RESOURCE_EXHAUSTED" not in str(e) or needed is None:
            raise
        temp = int(float(needed[1]) * 1024 ** (1 + "KMGT".index(needed[2])))
        message = str(e).splitlines()[0]
        return StepPlan(None, temp, temp, flops, round(time.perf_counter() - start, 1), message)
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    peak = (
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        - memory.alias_size_in_bytes
        + memory.temp_size_in_bytes
    )
    return StepPlan(
        argument_bytes=int(memory.argument_size_in_bytes),
        temp_bytes=int(memory.temp_size_in_bytes),
        peak_bytes=int(peak),
        flops=flops,
        compile_s=round(compile_s, 1),
    )


def step_flops(lower, config, shape, text, depth: int) -> float:
    """A step's FLOPs with every one of `depth` layers counted: XLA's cost analysis of the step
    unrolled at depths 1 and 2, extrapolated linearly. FLOPs are a property of the program, not
    of its placement, so the step is lowered whole for one CPU device (a TPU-lowered module
    has no cost analysis before it is compiled). Blockwise and ring attention loop over blocks,
    which the cost analysis would also count once: there the counted step takes the whole
    sequence as one block (the same arithmetic, backward recompute included)."""
    mesh = sharding.make_mesh({}, jax.devices("cpu")[:1])
    config = copy.deepcopy(config)
    with config.unlocked():
        config.model.attention_block = 2**31 - 1

    def flops(d):
        return float(lower(config, mesh, shape, text=text, depth=d).cost_analysis()["flops"])

    one, two = flops(1), flops(2)
    return one + (depth - 1) * (two - one)


def state_bytes_per_device(abstract_state) -> int:
    """Bytes of one device's shards of a state whose leaves carry shardings."""
    return sum(
        math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
        for leaf in jax.tree.leaves(abstract_state)
    )


def plan_row(base, target: topology.Target, variant: str, video: str, settings: Settings) -> dict:
    """Plans one (variant, clip shape) on `target`: the train step and a sampler step."""
    config = ml_collections.ConfigDict(base.to_dict())
    config.model.variant = variant
    model, text, optimizer = dit_lib.abstract_parts(config, None, None)
    t, h, w = parse_video(video, settings.vae, model.patch_size)
    mesh = sharding.make_mesh(settings.mesh or dict(config.mesh.items()), target.devices)
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    batch = settings.batch or config.batch_size
    if batch % shards:
        raise ValueError(f"batch {batch} does not split over data x fsdp = {shards} devices")
    clip = (t, h, w, settings.latent_channels)
    state, _ = dit_lib.abstract_state(model, text, optimizer, (1, *clip), mesh)
    row = dict(
        variant=variant,
        params=sum(math.prod(x.shape) for x in jax.tree.leaves(state.params["dit"])),
        state_bytes_per_device=state_bytes_per_device(state),
        video=video,
        latent="x".join(map(str, clip)),
        tokens_per_clip=t * h * w // math.prod(model.patch_size),
        batch=batch,
        mesh=dict(mesh.shape),
        topology=target.name,
        compiler=target.compiler,
        devices=len(target.devices),
        mfu=settings.mfu,
    )
    # A sampler step takes the smallest batch the mesh splits: one clip per batch shard.
    steps = [("train", dit_lib.lower_train_step, batch)]
    if settings.sample:
        steps.append(("sample", dit_lib.lower_sample_step, shards))
    for name, lower, clips in steps:
        step = plan_step(lower, config, mesh, (clips, *clip), text, model.depth)
        row[name] = dict(dataclasses.asdict(step), batch=clips)
        if target.spec is not None:
            row[name]["fits"] = step.peak_bytes <= target.spec.hbm_bytes
            peak_flops = target.spec.peak_bf16_flops * len(target.devices)
            row[name]["step_s_at_mfu"] = step.flops / (peak_flops * settings.mfu)
    return row


def describe(row: dict, target: topology.Target) -> str:
    mesh = " ".join(f"{k}={v}" for k, v in row["mesh"].items())
    lines = [
        f"{row['variant']} ({row['params'] / 1e9:.2f}B params)  video {row['video']} -> latent "
        f"{row['latent']}, {row['tokens_per_clip']} tokens a clip",
        f"  {row['topology']}: {row['devices']} devices, compiled by the {row['compiler']} "
        f"compiler, mesh {mesh}; params + optimizer + EMA "
        f"{_gib(row['state_bytes_per_device'])} a device",
    ]
    for name in ("train", "sample"):
        if name not in row:
            continue
        step = row[name]
        if step["refused"]:
            line = (
                f"  {name:<6} batch {step['batch']}: the compiler refused it, temporaries of "
                f"{_gib(step['temp_bytes'])} a device"
            )
        else:
            line = (
                f"  {name:<6} batch {step['batch']}: arguments {_gib(step['argument_bytes'])} + "
                f"temporaries {_gib(step['temp_bytes'])} -> peak {_gib(step['peak_bytes'])} "
                "a device"
            )
        if "fits" in step:
            verdict = "fits" if step["fits"] else "OOM"
            line += f" of {_gib(target.spec.hbm_bytes)}: {verdict}"
        line += f"; {step['flops']:.3g} FLOPs a step"
        if "step_s_at_mfu" in step:
            line += f" -> {step['step_s_at_mfu']:.3g} s at {row['mfu']:.0%} MFU"
        lines.append(line + f" (compiled in {step['compile_s']} s)")
    return "\n".join(lines)


def markdown(rows: list[dict], target: topology.Target) -> str:
    spec = target.spec
    head = f"Planned for `{target.name}`"
    if spec is not None:
        head += (
            f" ({len(target.devices)} x {spec.name}, {_gib(spec.hbm_bytes)} HBM, "
            f"{spec.peak_bf16_flops / 1e12:g} TFLOP/s bf16 each; step times at "
            f"{rows[0]['mfu']:.0%} MFU)"
        )
    lines = [
        head + f", {rows[0]['compiler']} compiler." + (f" {target.note}." if target.note else ""),
        "",
        "| variant | params | video (FxHxW) | tokens/clip | batch | mesh | train peak/device "
        "| train s/step | sample peak/device | sample s/step (batch) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        mesh = ",".join(f"{k}={v}" for k, v in row["mesh"].items() if v > 1) or "1 device"
        cells = [
            row["variant"],
            f"{row['params'] / 1e9:.2f}B",
            row["video"],
            str(row["tokens_per_clip"]),
            str(row["batch"]),
            mesh,
        ]
        for name in ("train", "sample"):
            step = row.get(name)
            if step is None:
                cells += ["", ""]
                continue
            fits = "" if "fits" not in step else (" fits" if step["fits"] else " **OOM**")
            at_least = ">= " if step["refused"] else ""  # the compiler stopped counting
            cells.append(at_least + _gib(step["peak_bytes"]) + fits)
            seconds = step.get("step_s_at_mfu")
            cells.append("" if seconds is None else f"{seconds:.3g}")
        cells[-1] += f" ({row['sample']['batch']})" if "sample" in row else ""
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _gib(nbytes: float) -> str:
    gib = nbytes / 1024**3
    return f"{gib:.3g} GiB" if gib < 1000 else f"{gib:,.0f} GiB"


def main(argv):
    del argv
    config, name = train_flags.CONFIG.value, _TOPOLOGY.value
    if config is None or not name:
        raise cli.UserError("--config and --topology are required")
    topology.use_cpu_devices(topology.cpu_devices_needed(name))
    with cli.user_errors(ValueError):
        target = topology.resolve(name)
    if target.note:
        print(f"note: {target.note}")
    variants = _VARIANTS.value or [config.model.variant]
    videos = _CLIPS.value or ["x".join(map(str, config.data.sizes[0]))]
    with cli.user_errors(ValueError):
        settings = Settings(
            mesh=parse_mesh(_MESH.value),
            batch=_BATCH.value,
            vae=parse_vae(_VAE.value),
            latent_channels=_LATENT_CHANNELS.value,
            mfu=_MFU.value,
            sample=_SAMPLE.value,
        )
    rows = []
    for variant in variants:
        for video in videos:
            with cli.user_errors(ValueError):
                rows.append(plan_row(config, target, variant, video, settings))
            print(describe(rows[-1], target), flush=True)
    if _MARKDOWN.value:
        atomic.write_text(pathlib.Path(_MARKDOWN.value), markdown(rows, target))
    if _JSON.value:
        atomic.write_json(_JSON.value, rows)


if __name__ == "__main__":
    cli.run(main)
