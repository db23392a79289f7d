"""The report as sections of text, figures and tables, written as HTML (index.html) and markdown."""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1180px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45;overflow-wrap:break-word}
h1{border-bottom:2px solid #446;padding-bottom:.2em}
h2{margin-top:2.2em;border-bottom:1px solid #ccd}
.scroll{max-width:100%;overflow-x:auto;margin:.6em 0 1.4em}
table{border-collapse:collapse;font-size:.82em}
th,td{border:1px solid #ccd;padding:.25em .5em;text-align:right;white-space:nowrap}
th,td.t{white-space:normal}th{background:#eef;vertical-align:bottom}td.t{text-align:left}
tr:nth-child(even){background:#f8f8fc}
figure{margin:1em 0}
figure img{max-width:100%;height:auto;box-sizing:border-box;border:1px solid #ddd}
figcaption{font-size:.9em;color:#444}.note{background:#fff6dd;border-left:4px solid #e0a800;
padding:.4em .8em;margin:.6em 0}
.warn{background:#fde8e8;border-left:4px solid #c33;padding:.4em .8em}
.verdict{background:#eef6ee;border-left:4px solid #393;padding:.4em .8em}
.abstract{font-size:1.05em;background:#f4f4fa;padding:.6em 1em;border-left:4px solid #446}
td a{color:inherit}
nav ul{columns:2}nav summary{cursor:pointer;color:#446}code{background:#f2f2f6;padding:0 .2em}
"""


def _cell_class(v: object) -> str:
    """Numbers right-aligned (no class), text left-aligned (``class=t``)."""
    if isinstance(v, Cell):
        return "" if v.numeric else " class=t"
    return "" if isinstance(v, int | float) and not isinstance(v, bool) else " class=t"


@dataclass(frozen=True)
class Cell:
    """A table cell shown as ``text``, with the full value as a tooltip and an optional link."""

    text: str
    title: str = ""
    href: str | None = None
    numeric: bool = False  # right-aligned like a number

    def __str__(self) -> str:
        return self.text


def _cell_html(v: Any) -> str:
    """A cell's inner HTML: a ``Cell`` with its tooltip and link, else the formatted value."""
    if not isinstance(v, Cell):
        return _breakable(fmt(v))
    title = f' title="{html.escape(v.title)}"' if v.title else ""
    inner = html.escape(v.text)
    if v.href:
        return f'<a href="{html.escape(v.href)}"{title}>{inner}</a>'
    return f"<span{title}>{inner}</span>"


# column name → header shown on the page (a column not named here: underscores become spaces)
HEADERS = {
    "run_id": "run", "l2": "λ", "lr": "ε", "kappa": "κ", "mu": "μ", "f_star": "f*",
    "grad_norm": "‖∇f‖", "train_time_s": "s", "seconds": "s", "max_abs_1_minus_lr_lambda":
    "max |1 − ελ|", "cond_before": "κ before", "cond_after": "κ after", "cond_before_nonzero":
    "κ before (non-zero part)", "cond_after_nonzero": "κ after (non-zero part)",
    "cond_before_ridge": "κ before (ridge)", "cond_after_ridge": "κ after (ridge)", "n_kept":
    "directions kept", "n_features_in": "features in", "n_features_out": "features out",
    "n_train": "training images", "test_accuracy": "test acc", "train_accuracy": "train acc",
    "val_accuracy": "val acc", "penalty_space": "penalty on", "final_f": "final f",
    "grad_norm_start": "‖∇f‖ at start", "loss_start": "f at start", "rate_measured":
    "rate measured", "kappa_raw": "κ raw", "lambda_min": "λ_min", "lambda_max": "λ_max",
}


def header(column: str) -> str:
    """A column's page header: ``HEADERS``, ``iters_to_1e-08`` → 'iters to 1e-8', else spaced."""
    if column in HEADERS:
        return HEADERS[column]
    m = re.fullmatch(r"(projected_)?(\w+?)_to_1e-0?(\d+)", column)
    if m:
        return f"{m.group(2)} to 1e-{m.group(3)}" + (", ≈ projected" if m.group(1) else "")
    return column.replace("_", " ")


@dataclass
class Block:
    """One piece of a section: ``text``, ``note`` (highlighted), ``figure`` or ``table``."""

    kind: str
    text: str = ""
    path: str = ""  # figure: path relative to the report dir; table: the CSV's relative path
    table: pd.DataFrame | None = None
    columns: dict[str, str] | None = None  # table column → display name (subset, in order)


@dataclass
class Section:
    """A titled section with an intro sentence and blocks."""

    key: str
    title: str
    intro: str
    blocks: list[Block] = field(default_factory=list)

    def text(self, s: str) -> None:
        self.blocks.append(Block("text", s))

    def abstract(self, s: str) -> None:
        """The page's summary paragraph."""
        self.blocks.append(Block("abstract", s))

    def note(self, s: str) -> None:
        self.blocks.append(Block("note", s))

    def verdict(self, s: str) -> None:
        """The claim's verdict: one sentence, shown as 'Verdict: …'."""
        self.blocks.append(Block("verdict", s))

    def figure(self, rel_path: str, caption: str) -> None:
        self.blocks.append(Block("figure", caption, rel_path))

    def table(self, df: pd.DataFrame, csv_rel: str, caption: str,
              columns: dict[str, str] | None = None) -> None:
        self.blocks.append(Block("table", caption, csv_rel, df, columns))


def thousands(n: float) -> str:
    """An integer with a narrow no-break space between groups of three digits: 12 345."""
    return f"{int(round(n)):,}".replace(",", "\u202f")


def sig(v: float, digits: int = 3) -> str:
    """A number to ``digits`` significant digits, grouped when ≥ 1000 and scientific when tiny."""
    if v == 0.0 or not math.isfinite(v):
        return str(v)
    if abs(v) >= 10 ** (digits - 1) and abs(v) < 1e12:
        return thousands(float(f"{v:.{digits}g}"))
    if abs(v) >= 1e-3:
        return f"{float(f'{v:.{digits}g}'):g}" if abs(v) < 1e6 else f"{v:.{digits - 1}e}"
    return f"{v:.{digits - 1}e}"


def fmt(v: Any) -> str:
    """A cell: integers grouped by thousands, floats to 4 significant digits (scientific when
    tiny/huge), None/NaN as '–'."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "iu"):
        return thousands(int(v))
    if isinstance(v, float):
        if v == 0.0 or math.isinf(v):
            return str(v)
        if v.is_integer() and 1 <= abs(v) < 1e9:
            return thousands(v)
        return sig(v, 4) if 1e-3 <= abs(v) < 1e6 else f"{v:.3e}"
    return str(v)


def _shown(b: Block) -> pd.DataFrame:
    df = b.table if b.table is not None else pd.DataFrame()
    if b.columns:
        df = df[[c for c in b.columns if c in df.columns]].rename(columns=b.columns)
    else:
        df = df.rename(columns={c: header(str(c)) for c in df.columns})
    return df


def _inline(s: str) -> str:
    """Escape, then turn `code` into <code> and [text](href) into a link."""
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(s))
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', out)


def _breakable(s: str, longer_than: int = 16) -> str:
    """Escaped table text where a long token (a run id, a snake_case name) may wrap after / , _ =
    (<wbr>)."""
    def token(t: str) -> str:
        if len(t) <= longer_than:
            return html.escape(t)
        return "<wbr>".join(html.escape(p) for p in re.split(r"(?<=[/,_=])(?=.)", t))
    return "".join(token(t) for t in re.split(r"(\s+)", s))


def to_html(title: str, subtitle: str, sections: list[Section]) -> str:
    """A self-contained page (inline CSS, no scripts; figures referenced beside it)."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1><p>{_inline(subtitle)}</p>",
           # one line: the first section stays on the first screen
           "<nav><details><summary>Contents</summary><ul>"]
    out += [f'<li><a href="#{s.key}">{html.escape(s.title)}</a></li>' for s in sections]
    out.append("</ul></details></nav>")
    for s in sections:
        intro = f"<p>{_inline(s.intro)}</p>" if s.intro else ""
        out.append(f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>{intro}')
        for b in s.blocks:
            if b.kind == "text":
                out.append(f"<p>{_inline(b.text)}</p>")
            elif b.kind == "note":
                cls = "warn" if "DISAGREE" in b.text else "note"
                out.append(f'<p class="{cls}">{_inline(b.text)}</p>')
            elif b.kind == "verdict":
                out.append(f'<p class="verdict"><b>Verdict:</b> {_inline(b.text)}</p>')
            elif b.kind == "abstract":
                out.append(f'<p class="abstract">{_inline(b.text)}</p>')
            elif b.kind == "figure":
                out.append(f'<figure><img src="{html.escape(b.path)}" alt="{html.escape(b.text)}">'
                           f"<figcaption>{_inline(b.text)}</figcaption></figure>")
            elif b.kind == "table":
                df = _shown(b)
                head = "".join(f"<th>{_breakable(str(c))}</th>" for c in df.columns)
                rows = []
                for rec in df.itertuples(index=False):
                    cells = "".join(f"<td{_cell_class(v)}>{_cell_html(v)}</td>" for v in rec)
                    rows.append(f"<tr>{cells}</tr>")
                out.append(f"<p><b>{_inline(b.text)}</b> (<a "
                           f"href=\"{html.escape(b.path)}\">CSV</a>)</p>"
                           f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
                           f"<tbody>{''.join(rows)}</tbody></table></div>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _md(s: str) -> str:
    """Markdown text with HTML's special characters escaped (``&<>``) outside `code` spans, so a
    name like ``<img onerror=...>`` shows as text, as in index.html; code spans are literal."""
    parts = re.split(r"(`[^`]+`)", str(s))
    return "".join(p if p.startswith("`") and p.endswith("`") and len(p) > 1
                   else html.escape(p, quote=False) for p in parts)


def _md_table(df: pd.DataFrame) -> str:
    cols = [_md(str(c)) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for rec in df.itertuples(index=False):
        lines.append("| " + " | ".join(_md(fmt(v)).replace("|", "\\|") for v in rec) + " |")
    return "\n".join(lines)


def to_markdown(title: str, subtitle: str, sections: list[Section]) -> str:
    """The same content as markdown (figures as image links, tables as pipe tables); text from
    runs and configs escaped (``_md``)."""
    out = [f"# {_md(title)}", "", _md(subtitle), ""]
    for s in sections:
        out += [f"## {_md(s.title)}", ""] + ([_md(s.intro), ""] if s.intro else [])
        for b in s.blocks:
            if b.kind == "text":
                out += [_md(b.text), ""]
            elif b.kind == "note":
                out += [f"> **Note.** {_md(b.text)}", ""]
            elif b.kind == "verdict":
                out += [f"**Verdict:** {_md(b.text)}", ""]
            elif b.kind == "abstract":
                out += [f"*{_md(b.text)}*", ""]
            elif b.kind == "figure":
                out += [f"![{_md(b.text)}]({b.path})", "", f"*{_md(b.text)}*", ""]
            elif b.kind == "table":
                out += [f"**{_md(b.text)}** ([CSV]({b.path}))", "", _md_table(_shown(b)), ""]
    return "\n".join(out) + "\n"
