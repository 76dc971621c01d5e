"""Runs an experiment: trains every arm of its sweep, evaluates each, writes RESULTS.md.

    python experiments/run.py experiments/<name> [--root workdirs/exp_<name>]

An experiment is a directory with `sweep.py` (big_vision's sweep style): `BASE` (a config
string for `sora-jax train`), `COMMON` (config overrides every arm shares), `EVAL` (arguments
of `sora-jax eval`), `get_sweep()`, one dict of overrides an arm with a "name"
("extra_evals": {name: more eval arguments} evaluates the arm again; "{root}" in an override,
an EVAL or an extra eval argument is ROOT), and optionally `prepare(root)`, run first (data the
arms train on, or files the evaluations read). Each arm
trains in ROOT/<name> with the project's own command (resuming when it was interrupted) and is
evaluated into ROOT/eval_<name> (skipped when its report exists); ROOT/compare.html sets the
arms side by side, and <experiment>/RESULTS.md gets a table of each arm's held-out adherence,
FVD, step time and final loss with the exact commands (edit the prose below the table by hand:
rerunning rewrites only the part between its markers).
"""

import argparse
import importlib.util
import json
import pathlib
import statistics
import subprocess
import sys

import jax
import numpy as np

from sora_jax import compare, dit_lib
from sora_jax.metric_writers import read_metrics

BEGIN, END = "<!-- results: begin (experiments/run.py) -->", "<!-- results: end -->"


def load_sweep(experiment: pathlib.Path):
    spec = importlib.util.spec_from_file_location("sweep", experiment / "sweep.py")
    if spec is None or not (experiment / "sweep.py").is_file():
        raise SystemExit(f"{experiment}/sweep.py: no such file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_NOT_OVERRIDES = ("name", "extra_evals")


def _with_root(value: str, root: pathlib.Path) -> str:
    return value.replace("{root}", str(root))  # not str.format: other braces stay as they are


def overrides_of(arm: dict, root: pathlib.Path) -> dict:
    """The arm's config overrides, "{root}" in a value replaced by the experiment's root."""
    return {
        k: _with_root(v, root) if isinstance(v, str) else v
        for k, v in arm.items()
        if k not in _NOT_OVERRIDES
    }


def evaluations(sweep, arm: dict) -> dict[str, list[str]]:
    """{eval name: eval arguments}: the arm's own, then its "extra_evals"."""
    return {arm["name"]: sweep.EVAL} | {
        name: [*sweep.EVAL, *extra] for name, extra in arm.get("extra_evals", {}).items()
    }


def train_command(sweep, arm: dict, root: pathlib.Path) -> list[str]:
    overrides = {**sweep.COMMON, **overrides_of(arm, root)}
    # Every arm encodes the same clips with the same VAE: one latent cache for all.
    overrides.setdefault("latent_cache_dir", str(root / "latent_cache"))
    return [
        sys.executable, "-m", "sora_jax.train", f"--config={sweep.BASE}",
        f"--workdir={root / arm['name']}", *(f"--config.{k}={v}" for k, v in overrides.items()),
    ]  # fmt: skip


def eval_command(arm: dict, root: pathlib.Path, name: str, args: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "sora_jax.evaluate", f"--checkpoint={root / arm['name']}",
        f"--out_dir={root / ('eval_' + name)}", *(_with_root(a, root) for a in args),
    ]  # fmt: skip


def run(command: list[str]) -> None:
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)


def training_summary(workdir: pathlib.Path) -> dict:
    """DiT params, steps, median seconds a step (checkpoints and samples left out), final
    loss (the mean of the last four logged)."""
    metrics = [m for m in read_metrics(workdir) if "loss" in m]
    losses = [m["loss"] for m in metrics[-4:]]
    params = dit_lib.load_pipeline(workdir).params["dit"]
    return {
        "params": sum(int(np.size(x)) for x in jax.tree.leaves(params)),
        "steps": metrics[-1]["step"],
        "sec_per_step": statistics.median(m["sec_per_step"] for m in metrics[1:]),
        "final_loss": sum(losses) / len(losses),
    }


def eval_runs(sweep) -> list[tuple[dict, str, list[str]]]:
    """(arm, eval name, eval arguments) of every evaluation of the experiment."""
    return [(a, n, args) for a in sweep.get_sweep() for n, args in evaluations(sweep, a).items()]


def results_table(sweep, root: pathlib.Path) -> str:
    arms = sweep.get_sweep()
    reports = {
        name: json.loads((root / f"eval_{name}" / "report.json").read_text())
        for _, name, _ in eval_runs(sweep)
    }
    training = {a["name"]: training_summary(root / a["name"]) for a in arms}
    sets = list(next(iter(reports.values()))["t2v"])
    header = ["arm", "overrides", "DiT params", "sec/step", "final loss"] + [
        f"{s} adherence" for s in sets
    ]
    fvd_sets = [s for s in sets if any("fvd" in r["t2v"][s] for r in reports.values())]
    header += [f"{s} FVD" for s in fvd_sets]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm, name, args in eval_runs(sweep):
        report, train = reports[name], training[arm["name"]]
        overrides = ", ".join(f"`{k}={v}`" for k, v in overrides_of(arm, root).items())
        overrides += "".join(f", eval `{_with_root(a, root)}`" for a in args if a not in sweep.EVAL)
        cells = [name, overrides, f"{train['params']:,}", f"{train['sec_per_step']:.2f}"]
        cells.append(f"{train['final_loss']:.3f}")
        cells += [f"{report['t2v'][s]['adherence']:.1%}" for s in sets]
        cells += [f"{report['t2v'][s].get('fvd', float('nan')):.0f}" for s in fvd_sets]
        lines.append("| " + " | ".join(cells) + " |")
    commands = [" ".join(["python", *train_command(sweep, a, root)[1:]]) for a in arms]
    commands += [
        " ".join(["python", *eval_command(a, root, name, args)[1:]])
        for a, name, args in eval_runs(sweep)
    ]
    steps = sorted({t["steps"] for t in training.values()})
    intro = f"Trained steps: {steps}. Every metric side by side: `{root}/compare.html`."
    return "\n".join([BEGIN, intro, "", *lines, "", "Commands:", "```", *commands, "```", END])


def write_results(experiment: pathlib.Path, table: str) -> pathlib.Path:
    path = experiment / "RESULTS.md"
    text = path.read_text() if path.exists() else f"# {experiment.name}\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    path.write_text(before + table + after)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", type=pathlib.Path)
    parser.add_argument("--root", type=pathlib.Path, help="default: workdirs/exp_<name>")
    args = parser.parse_args()
    sweep = load_sweep(args.experiment)
    root = args.root or pathlib.Path("workdirs") / f"exp_{args.experiment.name}"
    root.mkdir(parents=True, exist_ok=True)
    if hasattr(sweep, "prepare"):
        sweep.prepare(root)  # e.g. data the arms train on
    for arm in sweep.get_sweep():
        run(train_command(sweep, arm, root))
        for name, eval_args in evaluations(sweep, arm).items():
            if not (root / f"eval_{name}" / "report.json").exists():
                run(eval_command(arm, root, name, eval_args))
    reports = compare.load([root / f"eval_{name}" for _, name, _ in eval_runs(sweep)])
    print(compare.text_table(reports))
    compare.write(reports, root)
    print(f"wrote {write_results(args.experiment, results_table(sweep, root))}")


if __name__ == "__main__":
    main()
