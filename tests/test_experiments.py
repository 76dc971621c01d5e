"""Experiments (experiments/<name>/sweep.py): every override names a real config field, and
RESULTS.md keeps the hand-written prose around the generated table."""

import importlib.util
import pathlib

import pytest

from sora_jax import config_lib

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def _runner():
    spec = importlib.util.spec_from_file_location("experiment_runner", EXPERIMENTS / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "experiment", sorted(p.parent.name for p in EXPERIMENTS.glob("*/sweep.py"))
)
def test_every_arm_overrides_existing_config_fields(experiment):
    run = _runner()
    sweep = run.load_sweep(EXPERIMENTS / experiment)
    arms = sweep.get_sweep()
    assert len(arms) >= 2 and len({a["name"] for a in arms}) == len(arms)
    for arm in arms:
        config = config_lib.load_config(sweep.BASE)
        for key, value in {**sweep.COMMON, **run.overrides_of(arm, pathlib.Path("r"))}.items():
            *parents, leaf = key.split(".")
            node = config
            for part in parents:
                node = node[part]
            assert leaf in node, f"{experiment}/{arm['name']}: no config field {key}"
            node[leaf] = value  # type-checked by ml_collections
        command = run.train_command(sweep, arm, pathlib.Path("root"))
        assert f"--workdir={pathlib.Path('root') / arm['name']}" in command
        assert not any("{root}" in part for part in command)
    names = [name for _, name, _ in run.eval_runs(sweep)]
    assert len(set(names)) == len(names) >= len(arms)


def test_results_md_keeps_the_prose_around_the_table(tmp_path):
    run = _runner()
    experiment = tmp_path / "demo_experiment"
    experiment.mkdir()
    path = run.write_results(experiment, f"{run.BEGIN}\nfirst\n{run.END}")
    path.write_text("# Title\n\nWhy.\n\n" + path.read_text().split("\n\n", 1)[1] + "\nVerdict.\n")
    run.write_results(experiment, f"{run.BEGIN}\nsecond\n{run.END}")
    text = path.read_text()
    assert text.startswith("# Title\n\nWhy.") and text.rstrip().endswith("Verdict.")
    assert "second" in text and "first" not in text
