"""`index.html`: generated videos on one page, each playing inline with its prompt, the probe's
reading and pass/fail, under summary tables. Written by `eval` and `demo`; it needs no server
(open the file) and no scripts.
"""

import html
from collections.abc import Iterable, Sequence

_STYLE = """
 body { font-family: sans-serif; margin: 2em; max-width: 1400px; }
 table { border-collapse: collapse; margin: .5em 0 1.5em; }
 th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
 th:first-child, td:first-child { text-align: left; }
 .grid { display: flex; flex-wrap: wrap; gap: .8em; }
 .card { width: 220px; border: 1px solid #ccc; padding: .4em; border-radius: 6px; font-size: 85%; }
 .card img { width: 100%; image-rendering: pixelated; }
 .meta { color: #555; }
 .pass { color: #176f2c; } .fail { color: #b00020; }
"""


def table(columns: Sequence[str], rows: Iterable[Sequence]) -> str:
    """An HTML table; floats in [0, 1] print as percentages, other floats with 3 decimals."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def card(video: str, prompt: str, reading: str, passed: bool | None, meta: str = "") -> str:
    """One video: `video` is its path relative to the page (a GIF plays inline everywhere)."""
    verdict = "" if passed is None else ("pass" if passed else "fail")
    return f"""<div class="card">
<img src="{html.escape(video)}" alt="{html.escape(prompt)}" loading="lazy">
<p class="meta">{html.escape(meta)}</p>
<p><b>{html.escape(prompt)}</b></p>
<p class="{verdict}">{verdict} {html.escape(reading)}</p>
</div>"""


def page(title: str, intro: str, tables: dict[str, str], sections: dict[str, list[str]]) -> str:
    """The whole document: `intro` (HTML), {heading: table}, then {heading: cards}."""
    parts = [f"<h1>{html.escape(title)}</h1>", intro]
    parts += [f"<h2>{html.escape(h)}</h2>{t}" for h, t in tables.items()]
    parts += [
        f'<h2>{html.escape(h)}</h2><div class="grid">{"".join(cards)}</div>'
        for h, cards in sections.items()
    ]
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.1%}" if 0.0 <= value <= 1.0 else f"{value:.3f}"
    return "" if value is None else str(value)
