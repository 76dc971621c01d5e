"""Shipped checkpoints: what sampling needs from a trained run, in files small enough to commit.

A `train` workdir holds Orbax checkpoints of the whole training state (params, AdamW moments,
EMA, data position) and points at the VAE's own workdir. A bundle keeps only the DiT's EMA params
and the VAE's params, as safetensors with flat `a/b/c` names (no pickle, no code), next to
`bundle.json`: both configs, the steps they were trained to, the latent statistics the DiT was
trained with, and the sha256 of every weights file. `sora-jax export` writes one; every command
that takes `--checkpoint` (and `config.vae.workdir`, `config.init_from`) reads one. A
`train-vae` run exports as a VAE bundle (the VAE's params, config and step alone; read where a
VAE is), a `train-captioner` run as a captioner bundle (`captioner_lib`).

    checkpoints/<name>/bundle.json
    checkpoints/<name>/dit_ema.safetensors
    checkpoints/<name>/vae.safetensors
    checkpoints/<name>/logs/{dit,vae}/metrics.jsonl   the training logs (`plots.plot_curves`)
"""

import json
import os
import pathlib
import shutil
import uuid

import jax
import numpy as np
import safetensors.numpy
from flax import traverse_util

from sora_jax import checkpoints
from sora_jax.text.assets import sha256

META = "bundle.json"
FORMAT = 1
DIT = "dit_ema"
VAE = "vae"


def is_bundle(path: str | os.PathLike) -> bool:
    return (pathlib.Path(path) / META).is_file()


def read_meta(path: str | os.PathLike) -> dict:
    """bundle.json; CheckpointError for a directory that is not a bundle of this format."""
    file = pathlib.Path(path) / META
    if not file.is_file():
        raise checkpoints.CheckpointError(f"{path} is not a sora_jax bundle (no {META})")
    meta = json.loads(file.read_text())
    if meta.get("format") != FORMAT:
        raise checkpoints.CheckpointError(
            f"{file} has format {meta.get('format')!r}; this sora_jax reads format {FORMAT}"
        )
    return meta


def write(
    out_dir: str | os.PathLike, meta: dict, trees: dict, dtype=np.float32, files=None
) -> dict:
    """Writes a bundle of `trees` ({name: params}) and `meta`, whole or not at all; `files`
    ({relative path: source}) are copied in (the runs' metrics logs, for their curves).

    The files go to a hidden sibling first, renamed into place at the end; an existing
    `out_dir` is replaced only if it is a bundle (never some other directory), and is moved
    aside until the new one is in place and put back if that fails (a bundle can be rewritten
    from itself, `export_lib.export`); a hard kill between the two renames leaves it at
    `.<name>.<hex>.old` beside `out_dir`.
    """
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and not is_bundle(out_dir):
        raise checkpoints.CheckpointError(f"{out_dir} exists and is not a bundle; not replacing it")
    tmp = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex}.tmp")
    tmp.mkdir(parents=True)
    try:
        digests, counts = {}, {}
        for name, tree in trees.items():
            flat = traverse_util.flatten_dict(jax.device_get(tree), sep="/")
            tensors = {k: np.ascontiguousarray(np.asarray(v, dtype)) for k, v in flat.items()}
            safetensors.numpy.save_file(tensors, str(tmp / f"{name}.safetensors"))
            digests[name] = sha256(tmp / f"{name}.safetensors")
            counts[name] = sum(v.size for v in tensors.values())
        dtype = np.dtype(dtype).name
        meta = {"format": FORMAT, **meta, "dtype": dtype, "params": counts, "sha256": digests}
        (tmp / META).write_text(json.dumps(meta, indent=1))
        for relative, source in (files or {}).items():
            (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tmp / relative)
        for extra in out_dir.glob("*.md") if out_dir.exists() else ():
            shutil.copy2(extra, tmp / extra.name)  # a model card written by hand stays
        _swap_in(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _swap_in(new: pathlib.Path, out_dir: pathlib.Path) -> None:
    """Renames `new` to `out_dir`; an old `out_dir` is renamed aside first and deleted last,
    and renamed back if the swap fails."""
    old = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex}.old")
    try:
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(new, out_dir)
    except BaseException:
        if old.exists() and not out_dir.exists():
            os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_params(path: str | os.PathLike, name: str, abstract_tree):
    """The `name` params of a bundle, sha256-checked, in the structure and dtypes of
    `abstract_tree` (ShapeDtypeStructs); CheckpointError if anything does not match."""
    path = pathlib.Path(path)
    meta = read_meta(path)
    file = path / f"{name}.safetensors"
    expected = meta["sha256"].get(name)
    if expected is None or not file.is_file():
        raise checkpoints.CheckpointError(f"{path} has no {name} params")
    got = sha256(file)
    if got != expected:
        raise checkpoints.CheckpointError(
            f"{file} has sha256 {got}, but {META} records {expected}: the file was changed"
        )
    tensors = safetensors.numpy.load_file(str(file))
    want = traverse_util.flatten_dict(abstract_tree, sep="/")
    if set(tensors) != set(want):
        missing, extra = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
        raise checkpoints.CheckpointError(
            f"{file} does not fit this model: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    for key, spec in want.items():
        if tensors[key].shape != spec.shape:
            raise checkpoints.CheckpointError(
                f"{file}: {key} has shape {tensors[key].shape}, the model wants {spec.shape}"
            )
    flat = {k: np.asarray(tensors[k], spec.dtype) for k, spec in want.items()}
    return traverse_util.unflatten_dict(flat, sep="/")
