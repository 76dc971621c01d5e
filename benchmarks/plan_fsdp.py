"""The planner on the tiny DiT over 8 fake CPU devices at fsdp = 1, 2, 4, 8 (data takes the rest).

    python benchmarks/plan_fsdp.py [--variant tiny/1x4x4] [--batch 8]

Prints per fsdp degree what `sora-jax plan` reports: params + AdamW moments + EMA bytes a device
(which must fall as 1/fsdp), and the compiled train step's argument, temporary and peak bytes a
device, with the ratio of the state bytes to fsdp = 1's.
"""

import argparse
import json

import jax

jax.config.update("jax_num_cpu_devices", 8)

from sora_jax import config_lib, plan, topology  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="tiny/1x4x4")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    config = config_lib.load_config(f"configs/dit_tiny.py:batch={args.batch}")
    target = topology.resolve("cpu:8")
    first = None
    for fsdp in (1, 2, 4, 8):
        settings = plan.Settings(mesh={"data": 8 // fsdp, "fsdp": fsdp}, batch=args.batch,
                                 vae=(4, 4, 4), sample=False)  # fmt: skip
        row = plan.plan_row(config, target, args.variant, "17x64x64", settings)
        state = row["state_bytes_per_device"]
        first = first or state
        train = row["train"]
        print(json.dumps({
            "fsdp": fsdp,
            "state_mib_per_device": round(state / 2**20, 2),
            "state_ratio_vs_fsdp1": round(first / state, 2),
            "argument_mib": round(train["argument_bytes"] / 2**20, 2),
            "temp_mib": round(train["temp_bytes"] / 2**20, 2),
            "peak_mib": round(train["peak_bytes"] / 2**20, 2),
            "flops_per_step": train["flops"],
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
