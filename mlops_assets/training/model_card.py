"""A model card for every registered version, built from its ``model.json`` and gate verdict.

The card is markdown (``card.md``) and a self-contained HTML page (``card.html``: inline CSS,
the version's plots embedded as data URIs, nothing fetched), written beside the version's plots
under ``$MLOPS_HOME/reports/<model>/<version>/``. Both are rendered from one list of sections,
so they say the same. It can be rebuilt for any registered version: everything in it comes from
``model.json`` (sealed) and ``gate.json`` (sealed apart; one whose seal does not hold is shown
as unverified).

Both files are untrusted input here: every value is data, shown as text (HTML-escaped in the
page, markdown-escaped in the markdown, control characters shown as escapes), and a field that
is missing or not of the shape training writes reads as "not recorded" rather than failing.
The card quotes no data rows: metrics, group statistics and names of features and groups only.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlops_assets.markdown import md_list, md_table, md_text
from mlops_assets.text import printable

NOT_RECORDED = "not recorded"
UNSEALED = (
    "UNVERIFIED: this verdict's gate.json does not carry a seal that holds under this "
    "platform's key (written by hand, changed, or recorded before verdicts were sealed): the "
    "decision, test and p-value below are claims, not the gate's record"
)
CARD_FILES = ("card.md", "card.html")
PLOT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\.png")  # the plots diagnostics.plot_model writes


@dataclass(frozen=True)
class Block:
    """One piece of a section: ``fields`` (label, value) pairs, a ``table`` (header, rows), a
    list of ``items``, a ``text``, a ``heading`` or a ``plot`` (a PNG file beside the card)."""

    kind: str
    content: object
    header: tuple[str, ...] = ()


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]


# --- reading untrusted fields ----------------------------------------------------------------
def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _value(value: object, number: str = ".4f") -> str:
    """``value`` as text: a number in ``number`` format, a boolean as yes/no, text as it is,
    anything else (a list, an object) as JSON; missing or empty: not recorded."""
    if value is None or value == "" or value == [] or value == {}:
        return NOT_RECORDED
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:{number}}"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _text(value: object) -> str:
    """A text field (a name, a reason): only a non-blank string counts."""
    return value if isinstance(value, str) and value.strip() else NOT_RECORDED


def _interval(value: object) -> str:
    if isinstance(value, list | tuple) and len(value) == 2 and all(map(_is_number, value)):
        return f"[{value[0]:.4f}, {value[1]:.4f}]"
    return NOT_RECORDED


def _with_interval(value: object, interval: object) -> str:
    shown = _value(value)
    ci = _interval(interval)
    return shown if ci == NOT_RECORDED else f"{shown} {ci}"


def _texts(value: object) -> list[str]:
    return [_value(item) for item in _list(value)]


# --- the sections ----------------------------------------------------------------------------
def _fields(*pairs: tuple[str, object]) -> Block:
    return Block("fields", [(label, _value(value)) for label, value in pairs])


def _items(items: list[str], empty: str = NOT_RECORDED) -> Block:
    return Block("items", items) if items else Block("text", empty)


def _use(card: dict) -> Section:
    texts = _dict(card.get("card"))
    return Section(
        "Intended use",
        (
            _fields(
                ("Description", _text(texts.get("description"))),
                ("Intended use", _text(texts.get("intended_use"))),
                ("Out-of-scope use", _text(texts.get("out_of_scope_use"))),
            ),
        ),
    )


def label_delay(card: dict) -> str:
    """How long before training the newest labelled row was made (``created_at`` minus
    ``applied_until``): the newest label took at most that long to arrive, and any later row
    was still unlabelled when the model was trained."""
    try:
        until = datetime.fromisoformat(card["applied_until"])
        created = datetime.fromisoformat(card["created_at"])
        until = until if until.tzinfo else until.replace(tzinfo=UTC)  # warehouse times are UTC
        days = (created - until).total_seconds() / 86_400
    except (KeyError, TypeError, ValueError):
        return NOT_RECORDED
    return (
        f"{days:.1f} days from the newest labelled row (applied_until) to training "
        "(created_at): the newest label arrived within that time"
    )


def _training_data(card: dict) -> Section:
    rows = _dict(card.get("rows"))
    validation = _dict(card.get("validation"))
    split_at, until = _text(card.get("split_at")), _text(card.get("applied_until"))
    return Section(
        "Training data",
        (
            _fields(
                ("Table", card.get("table")),
                ("Target", card.get("target")),
                ("Task", card.get("task")),
                ("Rows restricted to", card.get("where") or "all labelled rows"),
                ("Training data version", card.get("training_data_version")),
                ("Training rows", f"applied before {split_at}"),
                ("Holdout rows", f"applied from {split_at} to {until}"),
                (
                    "Rows (train / holdout)",
                    f"{_value(rows.get('train'))} / {_value(rows.get('holdout'))}",
                ),
                ("Labelled rows in the table", rows.get("labelled")),
                (
                    "Validation",
                    " ".join(
                        f"{k} {_value(validation.get(k))}" for k in ("cv", "folds", "holdout_share")
                    ),
                ),
                ("Label delay", label_delay(card)),
            ),
        ),
    )


def _features(card: dict) -> Section:
    signature = _dict(card.get("signature"))
    dtypes = _dict(signature.get("dtypes"))
    protected = _dict(signature.get("protected"))
    used = {f for f in _list(protected.get("used_as_input")) if isinstance(f, str)}
    rows = [
        (
            feature,
            _value(dtypes.get(feature)),
            "protected attribute, used as an input" if feature in used else "input",
        )
        for feature in map(_value, _list(signature.get("features")))
    ]
    rows += [
        (attribute, "", "protected attribute: measured for fairness only, not an input")
        for attribute in _texts(protected.get("measured_only"))
    ]
    return Section(
        "Features and protected attributes",
        (
            Block("table", rows, ("feature", "type", "role"))
            if rows
            else Block("text", NOT_RECORDED),
            _fields(
                (
                    "Protected, measured only",
                    ", ".join(_texts(protected.get("measured_only"))) or "none",
                ),
                ("Protected, used as inputs", ", ".join(map(_value, sorted(used))) or "none"),
                (
                    "Justification for using them",
                    _text(protected.get("justification"))
                    if used
                    else "none needed (no protected attribute is an input)",
                ),
            ),
        ),
    )


def _search(card: dict) -> Section:
    winner = (card.get("candidate"), card.get("params"))
    trials = [_dict(t) for t in _list(card.get("search"))]
    rows = [
        (
            _value(t.get("candidate")),
            _value(t.get("params")),
            _value(t.get("cv_score")),
            _value(t.get("train_score")),
            "winner" if (t.get("candidate"), t.get("params")) == winner else "",
        )
        for t in trials
    ]
    search = (
        Block("table", rows, ("candidate", "params", "cv score", "train score", ""))
        if rows
        else Block("text", "trials not recorded (registered before the card existed)")
    )
    return Section(
        "Candidate search and the winner",
        (
            search,
            _fields(
                ("Winner", card.get("candidate")),
                ("Parameters", card.get("params")),
                ("Cross-validated score", card.get("cv_score")),
                ("Train score", card.get("train_score")),
                ("Decision threshold", card.get("threshold")),
            ),
        ),
    )


def _metrics(card: dict, primary: str | None) -> Section:
    intervals = _dict(card.get("metric_intervals"))
    rows = [
        (
            f"{name} (primary)" if name == primary else name,
            _value(value),
            _interval(intervals.get(name)),
        )
        for name, value in _dict(card.get("metrics")).items()
    ]
    return Section(
        "Metrics on the holdout",
        (
            Block("table", rows, ("metric", "value", "95% bootstrap interval"))
            if rows
            else Block("text", NOT_RECORDED),
        ),
    )


def _measures(record: dict, skip: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """The measures of a fairness record (``name`` and ``name_ci``) as (name, value [ci])."""
    return [
        (name, _with_interval(value, record.get(f"{name}_ci")))
        for name, value in record.items()
        if not str(name).endswith("_ci") and name not in skip
    ]


def _fairness(card: dict) -> Section:
    fairness = card.get("fairness")
    if not isinstance(fairness, dict):
        return Section("Fairness by group", (Block("text", "not measured"),))
    blocks = [
        _fields(
            ("Threshold", fairness.get("threshold")), ("Bootstrap rounds", fairness.get("rounds"))
        ),
        Block("heading", "Bounds broken"),
        _items(_texts(fairness.get("violations")), "none"),
        Block("heading", "Not measured"),
        _items(_texts(fairness.get("not_measured")), "none"),
    ]
    for attribute, record in _dict(fairness.get("attributes")).items():
        record = _dict(record)
        blocks.append(Block("heading", _value(attribute)))
        blocks.append(Block("table", _measures(record, ("groups",)), ("measure", "value [95% CI]")))
        groups = {_value(g): _dict(m) for g, m in _dict(record.get("groups")).items()}
        columns = list(dict.fromkeys(n for m in groups.values() for n, _ in _measures(m)))
        rows = [
            (group, *(_with_interval(m.get(c), m.get(f"{c}_ci")) for c in columns))
            for group, m in groups.items()
        ]
        if rows:
            blocks.append(Block("table", rows, ("group", *columns)))
    return Section("Fairness by group", tuple(blocks))


def _robustness(card: dict) -> Section:
    rows = [
        (_value(scenario), _value(r["finite"]), _value(r["in_range"]), _value(r["mean_abs_change"]))
        for scenario, r in (recorded_robustness(card) or {}).items()
    ]
    return Section(
        "Robustness",
        (
            Block("text", "Predictions of the first holdout rows under perturbed inputs."),
            Block("table", rows, ("scenario", "finite", "in range", "mean |change|"))
            if rows
            else Block("text", NOT_RECORDED),
        ),
    )


def _explanation(card: dict) -> Section:
    explanation = card.get("explanation")
    if not isinstance(explanation, dict):
        return Section("SHAP summary", (Block("text", NOT_RECORDED),))
    rows = [
        (_value(feature), _value(value))
        for feature, value in _dict(explanation.get("mean_abs_shap")).items()
    ]
    return Section(
        "SHAP summary",
        (
            _fields(
                ("Method", explanation.get("method")),
                ("Scale", explanation.get("scale")),
                ("Expected value", explanation.get("expected_value")),
                ("Rows explained", explanation.get("rows")),
            ),
            Block("table", rows, ("feature", "mean |SHAP|"))
            if rows
            else Block("text", NOT_RECORDED),
        ),
    )


def _gate(verdict: dict | None) -> Section:
    if not isinstance(verdict, dict):
        return Section("Gate decision", (Block("text", "not decided yet (no gate verdict)"),))
    test = _dict(verdict.get("test"))
    fairness = verdict.get("fairness")
    worse = _texts(_dict(fairness).get("worse"))
    blocks = [
        *((Block("text", UNSEALED),) if verdict.get("sealed") is False else ()),
        _fields(
            ("Promoted", verdict.get("promoted")),
            ("Reason", _text(verdict.get("reason"))),
            ("Decided at", verdict.get("at")),
        ),
        Block("heading", "Paired test against the champion"),
        _fields(
            ("Metric", test.get("metric")),
            ("Method", test.get("method")),
            ("Difference (positive = better)", test.get("difference")),
            ("Interval", _interval(test.get("ci"))),
            ("Level", test.get("level")),
            ("p-value", _value(test.get("p_value"), ".3g")),
        )
        if test
        else Block("text", "no paired test (no champion to compare with)"),
        Block("heading", "Fairness against the champion"),
        _items(worse, "not worse") if isinstance(fairness, dict) else Block("text", "not compared"),
    ]
    return Section("Gate decision", tuple(blocks))


def _lineage(card: dict) -> Section:
    libraries = [(_value(k), _value(v)) for k, v in _dict(card.get("libraries")).items()]
    return Section(
        "Lineage",
        (
            _fields(
                ("Model", card.get("model")),
                ("Version", card.get("version")),
                ("Created at", card.get("created_at")),
                ("Training data version", card.get("training_data_version")),
                ("dbt manifest version", card.get("dbt_manifest_version")),
                ("Code version", card.get("code_version")),
                ("Seed", card.get("seed")),
                ("Artefact sha256", card.get("sha256")),
                ("Sealed with key", _dict(card.get("seal")).get("key")),
            ),
            Block("table", libraries, ("library", "version"))
            if libraries
            else Block("text", NOT_RECORDED),
        ),
    )


def _limitations(card: dict) -> Section:
    return Section(
        "Known limitations", (_items(_texts(_dict(card.get("card")).get("limitations"))),)
    )


def sections(
    card: dict, verdict: dict | None, *, primary: str | None = None, plots: list[Path] = ()
) -> list[Section]:
    """The card of ``card`` (a version's ``model.json``) and ``verdict`` (its gate verdict,
    None if undecided), section by section; ``plots``: PNG files beside the card to show."""
    card = _dict(card)
    shown = [p for p in plots if PLOT_NAME.fullmatch(p.name)]
    return [
        _use(card),
        _training_data(card),
        _features(card),
        _search(card),
        _metrics(card, primary),
        _fairness(card),
        _robustness(card),
        _explanation(card),
        _gate(verdict),
        _lineage(card),
        _limitations(card),
        *([Section("Plots", tuple(Block("plot", p) for p in shown))] if shown else []),
    ]


def title(card: dict) -> str:
    card = _dict(card)
    return f"Model card: {_value(card.get('model'))} {_value(card.get('version'))}"


# --- rendering -------------------------------------------------------------------------------
def to_markdown(title: str, parts: list[Section]) -> str:
    lines = [f"# {md_text(title)}"]
    for section in parts:
        lines += ["", f"## {md_text(section.title)}"]
        for block in section.blocks:
            lines += ["", _markdown_block(block)]
    return "\n".join(lines) + "\n"


def _markdown_block(block: Block) -> str:
    if block.kind == "fields":
        return md_table(("", ""), block.content)
    if block.kind == "table":
        return md_table(block.header, block.content)
    if block.kind == "items":
        return md_list(block.content)
    if block.kind == "heading":
        return f"### {md_text(block.content)}"
    if block.kind == "plot":  # a checked file name (PLOT_NAME), linked relative to the card
        return f"![{block.content.stem}]({block.content.name})"
    return md_text(block.content)


def _h(value: object) -> str:
    """``value`` as HTML text: control characters shown as escapes, then HTML-escaped."""
    return html.escape(printable(str(value)), quote=True)


STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1d2433; margin: 0; background: #f6f7f9; }
main { max-width: 60rem; margin: 0 auto; padding: 1.5rem 2rem 3rem; background: #fff; }
h1 { font-size: 1.6rem; border-bottom: 2px solid #2f6fde; padding-bottom: .4rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; color: #2f6fde; }
h3 { font-size: 1rem; margin-top: 1.2rem; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid #d7dbe3; padding: .25rem .6rem; text-align: left;
         vertical-align: top; overflow-wrap: anywhere; }
th { background: #eef1f6; }
table.fields th { width: 16rem; }
img { max-width: 100%; border: 1px solid #d7dbe3; margin: .5rem 0; }
"""
# Nothing is fetched and nothing runs: styles inline, images data URIs only, no script.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def to_html(title: str, parts: list[Section]) -> str:
    body = [f"<h1>{_h(title)}</h1>"]
    for section in parts:
        body.append(f"<section><h2>{_h(section.title)}</h2>")
        body += [_html_block(block) for block in section.blocks]
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_h(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body><main>\n"
        + "\n".join(body)
        + "\n</main></body>\n</html>\n"
    )


def _html_rows(rows: list[tuple], header_cell: bool = False) -> str:
    first = "th" if header_cell else "td"
    return "".join(
        f"<tr><{first}>{_h(row[0])}</{first}>"
        + "".join(f"<td>{_h(cell)}</td>" for cell in row[1:])
        + "</tr>"
        for row in rows
    )


def _html_block(block: Block) -> str:
    if block.kind == "fields":
        return f'<table class="fields">{_html_rows(block.content, header_cell=True)}</table>'
    if block.kind == "table":
        header = "".join(f"<th>{_h(h)}</th>" for h in block.header)
        return f"<table><tr>{header}</tr>{_html_rows(block.content)}</table>"
    if block.kind == "items":
        return "<ul>" + "".join(f"<li>{_h(item)}</li>" for item in block.content) + "</ul>"
    if block.kind == "heading":
        return f"<h3>{_h(block.content)}</h3>"
    if block.kind == "plot":
        encoded = base64.b64encode(block.content.read_bytes()).decode()
        return (
            f'<figure><img alt="{_h(block.content.stem)}" '
            f'src="data:image/png;base64,{encoded}"></figure>'
        )
    return f"<p>{_h(block.content)}</p>"


def write_card(
    directory: Path, card: dict, verdict: dict | None, *, primary: str | None = None
) -> Path:
    """Write ``card.md`` and ``card.html`` for ``card`` (``model.json``) and ``verdict`` into
    ``directory`` (the version's reports folder; its plots are embedded); returns the HTML's
    path."""
    directory.mkdir(parents=True, exist_ok=True)
    parts = sections(card, verdict, primary=primary, plots=sorted(directory.glob("*.png")))
    heading = title(card)
    (directory / "card.md").write_text(to_markdown(heading, parts))
    page = directory / "card.html"
    page.write_text(to_html(heading, parts))
    return page


def has_card(directory: Path) -> bool:
    return all((directory / name).is_file() for name in CARD_FILES)


def summary(
    card: dict, verdict: dict | None, *, primary: str | None = None, champion: bool | None = None
) -> list[tuple[str, str]]:
    """The card in a few lines, for a terminal: version, whether it is the champion, the
    winner, the primary metric with its interval, the fairness verdict, the gate decision with
    its p-value and the intended use."""
    card = _dict(card)
    verdict = _dict(verdict)
    metric = primary or _dict(verdict.get("test")).get("metric")
    value = _dict(card.get("metrics")).get(metric) if isinstance(metric, str) else None
    ci = _dict(card.get("metric_intervals")).get(metric) if isinstance(metric, str) else None
    fairness = card.get("fairness")
    violations = _texts(_dict(fairness).get("violations"))
    if not isinstance(fairness, dict):
        fair = "not measured"
    elif violations:
        fair = f"{len(violations)} bound(s) broken: " + "; ".join(violations)
    else:
        fair = "no bound broken"
    not_measured = _texts(_dict(fairness).get("not_measured"))
    if not_measured:
        fair += "; not measured: " + "; ".join(not_measured)
    test = _dict(verdict.get("test"))
    promoted = verdict.get("promoted")
    decision = _text(verdict.get("reason")) if verdict else "not decided yet"
    if isinstance(promoted, bool):
        decision = f"{'promoted' if promoted else 'not promoted'}: {decision}"
    unverified = {  # Registry.verdict's "sealed": False, forged; None, the history's word
        False: "UNVERIFIED (gate.json not sealed): ",
        None: "from the promotion history (not sealed): ",
    }.get(verdict.get("sealed", True), "")
    p_value = test.get("p_value")
    return [
        ("model", _value(card.get("model"))),
        ("version", _value(card.get("version"))),
        ("champion", NOT_RECORDED if champion is None else _value(champion)),
        ("candidate", f"{_value(card.get('candidate'))} {_value(card.get('params'))}"),
        (
            "primary metric",
            f"{_value(metric)} {_with_interval(value, ci)}"
            + (" (95% interval)" if _interval(ci) != NOT_RECORDED else ""),
        ),
        ("fairness", fair),
        ("gate decision", unverified + decision),
        (
            "p-value",
            f"{unverified}{_value(p_value, '.3g')} ({_value(test.get('method'))} test of "
            f"{_value(test.get('metric'))})"
            if _is_number(p_value)
            else "no paired test",
        ),
        ("intended use", _text(_dict(card.get("card")).get("intended_use"))),
    ]


def recorded_robustness(card: dict) -> dict | None:
    """The robustness scenarios training recorded in ``card`` (``model.json``): scenario ->
    finite, in range (booleans) and mean absolute change (a number); None when there are none
    of that shape (a version registered before they were recorded)."""
    report = _dict(_dict(card).get("robustness"))
    valid = all(
        isinstance(r, dict)
        and isinstance(r.get("finite"), bool)
        and isinstance(r.get("in_range"), bool)
        and _is_number(r.get("mean_abs_change"))
        for r in report.values()
    )
    return report if report and valid else None
