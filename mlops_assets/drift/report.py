"""Drift reports for people: a self-contained HTML page and a markdown summary.

The HTML page has no scripts and no external assets; every distribution is drawn as an inline
SVG from the aggregated bins (at most 30 per column), so a report of 100 columns stays well
under 2 MB however many rows were compared.
"""

from __future__ import annotations

import functools
import html
from datetime import UTC, datetime

from mlops_assets.drift.engine import DriftReport
from mlops_assets.markdown import md_table

REF_COLOUR, CUR_COLOUR = "#4c78a8", "#f58518"
SVG_WIDTH, SVG_HEIGHT, SVG_PAD = 360, 90, 2


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def summary_line(report: DriftReport) -> str:
    verdict = "DATASET DRIFT" if report.dataset_drift else "no dataset drift"
    return (
        f"{verdict}: {report.n_drifted_columns} of {report.n_columns} columns drifted "
        f"({report.share_drifted_columns:.0%}; dataset drift at >= {report.drift_share:.0%})"
    )


def markdown(report: DriftReport, limit: int = 40) -> str:
    data = report.to_dict()
    rows = [
        [
            c["column"],
            c["kind"],
            c["test"],
            _fmt(c["score"]),
            _fmt(c["threshold"]),
            "YES" if c["drifted"] else "no",
        ]
        for c in data["columns"][:limit]
    ]
    text = summary_line(report) + "\n\n"
    text += md_table(["column", "kind", "test", "score", "threshold", "drifted"], rows)
    if len(data["columns"]) > limit:
        text += f"\n\n{len(data['columns']) - limit} more columns in the HTML report."
    if report.multivariate:
        m = report.multivariate
        text += "\n\nDomain classifier (reference vs current) " + (
            f"ROC-AUC {m['score']:.3f} (drift at >= {m['threshold']}): "
            f"{'drift' if m['drifted'] else 'no drift'}."
            if m["score"] is not None
            else f"gives no verdict: {m['note']}."  # too few rows or no columns
        )
    return text


def _svg(bins: list[str], ref: list[float], cur: list[float]) -> str:
    """Paired bars, reference and current share per bin."""
    width, height = SVG_WIDTH, SVG_HEIGHT
    top = max([*ref, *cur, 1e-12])
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="distribution">']
    for (x_ref, x_cur, bar), label, a, b in zip(
        _bar_places(len(bins)), bins, ref, cur, strict=True
    ):
        title = html.escape(label)
        for x, share, colour in ((x_ref, a, REF_COLOUR), (x_cur, b, CUR_COLOUR)):
            h = (height - 4) * share / top
            parts.append(
                f'<rect x="{x}" y="{height - h:.1f}" width="{bar}" height="{h:.1f}" '
                f'fill="{colour}"><title>{title}: {share:.2%}</title></rect>'
            )
    parts.append("</svg>")
    return "".join(parts)


@functools.cache
def _bar_places(n: int) -> list[tuple[str, str, str]]:
    """x of the reference and current bars of each of ``n`` bins and the bars' width, as
    the SVG shows them: the same for every plot of ``n`` bins."""
    pad = SVG_PAD
    slot = (SVG_WIDTH - 2 * pad) / max(n, 1)
    bar = max(slot / 2 - 0.5, 0.5)
    return [
        (f"{pad + i * slot:.1f}", f"{pad + i * slot + bar:.1f}", f"{bar:.1f}") for i in range(n)
    ]


def to_html(report: DriftReport, title: str = "Data drift report") -> str:
    data = report.to_dict(plots=True)
    rows = []
    for c in data["columns"]:
        status = '<b class="drift">drift</b>' if c["drifted"] else "ok"
        note = f"<br><small>{html.escape(c['note'])}</small>" if c["note"] else ""
        rows.append(
            f"<tr><td>{html.escape(c['column'])}{note}</td><td>{c['kind']}</td>"
            f"<td>{c['test']}</td><td>{_fmt(c['score'])}</td><td>{_fmt(c['threshold'])}</td>"
            f"<td>{status}</td><td>{c['current_missing_share']:.1%}</td>"
            f"<td>{_svg(c['bins'], c['reference_shares'], c['current_shares'])}</td></tr>"
        )
    multivariate = ""
    if report.multivariate:
        m = report.multivariate
        verdict = (
            f"ROC-AUC <b>{m['score']:.3f}</b>, drift at &ge; {m['threshold']} &rarr; "
            f"{'<b class=drift>drift</b>' if m['drifted'] else 'no drift'}"
            if m["score"] is not None
            else f"no verdict: {html.escape(m['note'])}"  # too few rows or no columns
        )
        multivariate = (
            "<p>Domain classifier (can a model tell current rows from reference rows?): "
            f"{verdict}.</p>"
        )
    skipped = (
        f"<p>Not compared (time and nested columns): {html.escape(', '.join(report.skipped))}</p>"
        if report.skipped
        else ""
    )
    created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}
table{{border-collapse:collapse}} td,th{{border-bottom:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:middle}} .drift{{color:#c0392b}}
.key span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p><b>{html.escape(summary_line(report))}</b></p>
<p>Reference rows: {report.reference_rows:,}; current rows: {report.current_rows:,};
multiple-testing correction: {report.correction}. Created {created}.</p>
{multivariate}{skipped}
<p class="key"><span style="background:{REF_COLOUR}"></span>reference
<span style="background:{CUR_COLOUR}"></span>current (share of rows per bin)</p>
<table><thead><tr><th>column</th><th>kind</th><th>test</th><th>score</th><th>threshold</th>
<th>drift</th><th>missing (current)</th><th>distribution</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""
