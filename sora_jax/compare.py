"""Two or more `eval` reports side by side: how ablations are judged.

    sora-jax eval --compare A/report.json,B/report.json [--out_dir D]

One row per sampling setting in which the runs differ (CFG, guidance interval, shift, sampler,
steps, seed, prompt expansion), then one per metric (adherence of every prompt set and
attribute, every task's headline metrics, FVD, seconds per video), one column per run, and
the change of each run against the first.
Printed as text; with `--out_dir`, also `D/compare.html` (the same tables, and each run's
gallery linked) and `D/compare.json`.
"""

import json
import os
import pathlib

from sora_jax import atomic, gallery, probe_eval, task_eval


def load(paths) -> dict[str, dict]:
    """{run name: report}; a run is named by its directory, made unique if two share a name."""
    reports = {}
    for path in paths:
        path = pathlib.Path(path)
        file = path / "report.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no eval report at {file}")
        report = json.loads(file.read_text())
        if "t2v" not in report:
            raise ValueError(f"{file} is not a `sora-jax eval` report")
        name = file.parent.name
        while name in reports:
            name += "'"
        reports[name] = {**report, "_file": str(file.resolve())}
    if len(reports) < 2:
        raise ValueError("--compare needs at least two reports")
    return reports


SETTINGS = ("sampler", "steps", "cfg", "cfg_interval", "shift", "seed", "expand_prompt")


def metric_rows(reports: dict[str, dict]) -> list[tuple[str, list]]:
    """[(metric name, [value per run or None])] over every metric any run reports, after a
    "setting: ..." row for each sampling setting in which the runs differ."""

    def values(get):
        return [get(r) for r in reports.values()]

    names: dict[str, None] = {}  # ordered union
    for key in SETTINGS:
        seen = {json.dumps(r.get("settings", {}).get(key)) for r in reports.values()}
        if len(seen) > 1:
            names[f"setting: {key}"] = None
    for report in reports.values():
        for set_name, summary in report["t2v"].items():
            names[f"t2v {set_name}: adherence"] = None
            names[f"t2v {set_name}: all correct"] = None
            for attribute in probe_eval.ATTRIBUTES:
                if attribute in summary["attributes"]:
                    names[f"t2v {set_name}: {attribute}"] = None
            if "fvd" in summary:
                names[f"t2v {set_name}: FVD"] = None
        for task, summary in report["tasks"].items():
            names[f"{task}: adherence"] = None
            for metric in task_eval.HEADLINE:
                if metric in summary:
                    names[f"{task}: {metric}"] = None
        for timing in report["timings_s"]:
            names[f"seconds: {timing}"] = None
    return [(name, values(lambda r, n=name: _lookup(r, n))) for name in names]


def _lookup(report: dict, name: str):
    head, metric = name.split(": ", 1)
    if head == "setting":
        return report.get("settings", {}).get(metric)
    if head == "seconds":
        return report["timings_s"].get(metric)
    if head.startswith("t2v "):
        summary = report["t2v"].get(head[4:])
        if summary is None:
            return None
        key = {"adherence": "adherence", "all correct": "all_correct", "FVD": "fvd"}.get(metric)
        return summary.get(key) if key else summary["attributes"].get(metric)
    summary = report["tasks"].get(head)
    return None if summary is None else summary.get(metric)


def text_table(reports: dict[str, dict]) -> str:
    runs = list(reports)
    width = max(len(n) for n, _ in metric_rows(reports))
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{r:>22}" for r in runs)]
    for name, values in metric_rows(reports):
        cells = [_fmt(v) for v in values]
        for i in range(1, len(cells)):
            difference = _difference(values[0], values[i])
            cells[i] += "" if difference is None else f" ({difference:+.3f})"
        lines.append(f"{name:<{width}}  " + "  ".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


def write(reports: dict[str, dict], out_dir) -> pathlib.Path:
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = list(reports)
    rows = metric_rows(reports)
    columns = ["metric", *runs, *(f"{r} - {runs[0]}" for r in runs[1:])]
    body = [
        [name, *values, *(_signed(_difference(values[0], v)) for v in values[1:])]
        for name, values in rows
    ]
    links = "".join(
        f'<li>{name}: step {r["step"]}, <a href="{_relative(r["_file"], out_dir)}">report</a>, '
        f'<a href="{_relative(pathlib.Path(r["_file"]).parent / "index.html", out_dir)}">'
        "gallery</a></li>"
        for name, r in reports.items()
    )
    html = gallery.page(
        "sora_jax: eval reports compared",
        f"<ul>{links}</ul>",
        {"Metrics": gallery.table(columns, body)},
        {},
    )
    atomic.write_text(out_dir / "compare.html", html)
    atomic.write_json(out_dir / "compare.json", {"runs": runs, "metrics": dict(rows)})
    return out_dir / "compare.html"


def _difference(first, value) -> float | None:
    if isinstance(first, (int, float)) and isinstance(value, (int, float)):
        return float(value - first)
    return None


def _signed(difference: float | None) -> str | None:
    return None if difference is None else f"{difference:+.3f}"


def _fmt(value) -> str:
    return "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def _relative(path, start) -> str:
    return os.path.relpath(path, pathlib.Path(start).resolve())
