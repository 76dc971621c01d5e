"""`eval --compare`: two reports side by side, with the differences against the first."""

import json

import pytest

from sora_jax import compare


def _report(adherence, color, seam, fvd=None, cfg=4.0, interval=None):
    t2v = {"adherence": adherence, "all_correct": 0.5, "attributes": {"color": color}}
    return {
        "step": 100,
        "settings": {"cfg": cfg, "cfg_interval": interval, "steps": 25, "sampler": "euler"},
        "t2v": {"heldout": t2v if fvd is None else {**t2v, "fvd": fvd}},
        "tasks": {"loop": {"adherence": 0.25, "seams_continuous": seam}},
        "timings_s": {"heldout_per_video": 1.5},
        "videos": [],
    }


def test_compare_lines_up_every_metric_with_differences(tmp_path):
    for name, report in {
        "cross": _report(0.5, 0.75, 0.5),
        "joint": _report(0.625, 1.0, 0.25, 80.0, cfg=7.0, interval=[0.2, 0.85]),
    }.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(report))
    reports = compare.load([tmp_path / "cross", tmp_path / "joint" / "report.json"])
    rows = dict(compare.metric_rows(reports))
    # The settings that differ come first; those that agree (steps, sampler) are left out.
    assert list(rows)[:2] == ["setting: cfg", "setting: cfg_interval"]
    assert rows["setting: cfg_interval"] == [None, [0.2, 0.85]]
    assert "setting: steps" not in rows and "setting: sampler" not in rows
    assert rows["t2v heldout: adherence"] == [0.5, 0.625]
    assert rows["t2v heldout: color"] == [0.75, 1.0]
    assert rows["t2v heldout: FVD"] == [None, 80.0]  # only one run measured it
    assert rows["loop: seams_continuous"] == [0.5, 0.25]
    text = compare.text_table(reports)
    assert "0.625 (+0.125)" in text and "0.250 (-0.250)" in text and "[0.2, 0.85]" in text
    page = compare.write(reports, tmp_path / "out").read_text()
    assert "+0.125" in page and 'href="../joint/index.html"' in page
    assert json.loads((tmp_path / "out" / "compare.json").read_text())["runs"] == ["cross", "joint"]


def test_compare_refuses_what_it_cannot_compare(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "report.json").write_text(json.dumps(_report(0.5, 0.5, 0.5)))
    with pytest.raises(ValueError, match="at least two"):
        compare.load([tmp_path / "a"])
    with pytest.raises(FileNotFoundError, match="no eval report"):
        compare.load([tmp_path / "a", tmp_path / "missing"])
    (tmp_path / "b.json").write_text("{}")
    with pytest.raises(ValueError, match="not a `sora-jax eval` report"):
        compare.load([tmp_path / "a", tmp_path / "b.json"])
