"""`mlops models` and `mlops explain`: the registry's versions and champions of every declared
model, a promotion by hand, and why a champion scored one row as it did."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from mlops_assets.cli.common import console, fail, failing, out, settings
from mlops_assets.text import printable

if TYPE_CHECKING:
    from mlops_assets.settings import Settings
    from mlops_assets.training.registry import Registry
    from mlops_assets.training.spec import ModelSpec

app = typer.Typer(help="The model registry: versions, champions, promotions.", no_args_is_help=True)
root = typer.Typer()  # `mlops explain` sits at the top level


def declared(name: str | None) -> ModelSpec:
    """The declared model called ``name`` (None: the first declared); an undeclared name is a
    usage error (exit 2) that lists the declared models."""
    from mlops_assets import catalogue

    if name is None:
        first = next(iter(catalogue.models().values()), None)
        if first is None:
            fail(LookupError("no model is declared (a TrainedModel under mlops_assets/defs/)"), 2)
        return first
    with failing(catalogue.UnknownModel, code=2):
        return catalogue.model(name)


def registry(home: Settings) -> Registry:
    from mlops_assets.training.registry import Registry

    return Registry(home.models_dir, home.keyring_path)


@app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """Every registered version of every declared model, the champion marked, its primary
    metric, and whether it verifies (its seal under this keyring holds and its files match): one
    that does not is never loaded, and the model's next training (`mlops run`) replaces it."""
    from rich.table import Table

    from mlops_assets import catalogue
    from mlops_assets.training.registry import RegistryError
    from mlops_assets.warehouse import WarehouseMissingError, require_warehouse

    home = settings()
    models = registry(home)
    rows = []
    with failing(RegistryError, WarehouseMissingError):
        require_warehouse(home.warehouse_path)
        for spec in catalogue.models().values():
            champion = models.champion(spec.name)
            for card in models.versions(spec.name):
                data = card.data
                rows.append(
                    {
                        "model": spec.name,
                        "version": card.version,
                        "is_champion": card.version == champion,
                        "sealed": models.verifies(spec.name, card.version),
                        "candidate": data.get("candidate"),
                        "primary_metric": spec.primary,
                        "metrics": card.metrics,
                        "training_data_version": data.get("training_data_version"),
                        "created_at": data.get("created_at"),
                    }
                )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("no models registered yet: run `mlops run`")
        return
    table = Table(title="Registered models")
    columns = ("model", "version", "champion", "sealed", "candidate", "key metric", "data")
    for column in (*columns, "created"):
        table.add_column(column)
    for row in rows:
        key = row["primary_metric"]
        value = row["metrics"].get(key)
        cells = (
            row["model"],
            row["version"],
            "★" if row["is_champion"] else "",
            "yes" if row["sealed"] else "NO: refused",
            row["candidate"],
            f"{key} {value:.4f}" if isinstance(value, int | float) else "-",
            row["training_data_version"],
            str(row["created_at"])[:19],
        )
        # Registry files: text, not markup, control characters escaped.
        table.add_row(*(Text(printable(str(cell))) for cell in cells))
    out.print(table)


@app.command("promote")
def models_promote(
    model: Annotated[str, typer.Argument(help="A declared model (`mlops models list`).")],
    version: Annotated[str, typer.Argument(help="A registered version (`mlops models list`).")],
    reason: Annotated[str, typer.Option(help="Why: recorded in the promotion history.")],
) -> None:
    """Make VERSION the champion of MODEL by hand (recorded with who, when and why). Only a
    sealed version of MODEL itself is accepted."""
    from mlops_assets.training.registry import RegistryError

    if not reason.strip():
        raise typer.BadParameter("say why this version becomes the champion", param_hint="--reason")
    name = declared(model).name
    models = registry(settings())
    with failing(RegistryError):
        before = models.champion(name)
        metrics_before = models.card(name, before).metrics if before else None
        event = models.promote(name, version, reason=reason, metrics_before=metrics_before)
    console.print(
        f"{name}: champion {event['from_version'] or 'none'} -> {event['to_version']} "
        f"by {event['by']}: {reason}"
    )


@app.command("show")
def models_show(
    model: Annotated[str, typer.Argument(help="A declared model (`mlops models list`).")],
    version: Annotated[
        str | None,
        typer.Argument(help="A registered version (`mlops models list`) [default: the champion]."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """The model card of VERSION of MODEL: its summary (champion or not, the winner, the primary
    metric with its interval, fairness, the gate's decision and p-value, the intended use) and
    the path of the card's HTML page under $MLOPS_HOME/reports, rebuilt from the version's
    model.json when it is missing. A version that does not verify is refused."""
    from rich.table import Table

    from mlops_assets.training.model_card import has_card, summary, write_card
    from mlops_assets.training.registry import RegistryError

    spec = declared(model)
    home = settings()
    models = registry(home)
    with failing(RegistryError):
        champion = models.champion(spec.name)
        version = version or champion
        if version is None:
            fail(LookupError(f"{spec.name} has no champion yet: name a version or run `mlops run`"))
        card = models.verify(spec.name, version)
        verdict = models.verdict(spec.name, version)
    directory = home.reports_dir / spec.name / version
    if not has_card(directory):
        with failing(OSError):  # an unwritable reports folder: said, not a traceback
            write_card(directory, card.data, verdict, primary=spec.primary)
    page = directory / "card.html"
    rows = summary(card.data, verdict, primary=spec.primary, champion=version == champion)
    if as_json:
        print(json.dumps({**dict(rows), "card": str(page)}, indent=2))
        return
    # Registry files: text, not markup, control characters escaped.
    shown = Table(title=Text(f"{spec.name} {version}: model card"), show_header=False)
    for label, value in rows:
        shown.add_row(Text(label), Text(printable(value)))
    out.print(shown)
    out.print(Text(f"card: {printable(str(page))}"), soft_wrap=True)  # one line: copyable


@root.command()
def explain(
    row_id: Annotated[str, typer.Argument(metavar="ID", help="The row (its id) to explain.")],
    model: Annotated[
        str | None,
        typer.Option(help="The declared model whose champion explains [default: the first]."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Why the champion scored one row of its model's table (an application) as it did: its
    SHAP contributions per feature, which add up to the model's output on its own scale
    (log-odds, probability or the target's units) minus the expected value, and its adverse
    reason codes when its score is at or above the threshold (stored by scoring, else
    computed)."""
    import math

    from rich.table import Table

    from mlops_assets.training.reasons import explain_one
    from mlops_assets.training.registry import RegistryError
    from mlops_assets.warehouse import WarehouseMissingError, connection

    spec = declared(model)
    home = settings()
    models = registry(home)
    with failing(RegistryError):
        if models.champion(spec.name) is None:
            fail(RuntimeError(f"{spec.name} has no champion yet: run `mlops run` first"), 2)
    with (
        failing(RegistryError, WarehouseMissingError),
        connection(
            home.warehouse_path, read_only=True, memory_limit=home.duckdb_memory_limit
        ) as con,
    ):
        found = explain_one(con, models, spec, row_id)
    if found is None:
        fail(LookupError(f"no row with {spec.id_column} {row_id} in {spec.table}"))
    shap = found.explanation
    contributions = shap.contributions.iloc[0].sort_values(key=abs, ascending=False)
    error = shap.additivity_error()

    def plain(value):  # JSON: a missing number is null
        return None if isinstance(value, float) and math.isnan(value) else value

    if as_json:
        document = {
            spec.id_column: row_id,
            "model": spec.name,
            "model_version": found.version,
            "prediction": found.score,
            "threshold": found.threshold,
            "method": shap.method,
            "scale": shap.scale,
            "expected_value": shap.expected_value,
            "output": float(shap.output[0]),
            "additivity_error": error,
            "contributions": [
                {"feature": f, "value": plain(found.values[f]), "contribution": float(c)}
                for f, c in contributions.items()
            ],
            "reasons": found.reasons.to_dict("records"),
            "reasons_from": found.reasons_from,
        }
        print(json.dumps(document, indent=2, default=str))
        return
    # The id and values are data: Text (never markup), control characters escaped.
    shown = Table(
        title=Text(printable(f"{spec.name} {found.version}: {row_id} scored {found.score:.4f}"))
    )
    for column in ("feature", "value", f"contribution ({shap.scale})"):
        shown.add_column(column)
    for feature, contribution in contributions.items():
        cells = (feature, plain(found.values[feature]), f"{contribution:+.4f}")
        shown.add_row(*(Text(printable(str(cell))) for cell in cells))
    out.print(shown)
    total = contributions.sum()
    out.print(
        Text(
            f"{shap.method} explainer: expected value {shap.expected_value:+.4f} + "
            f"contributions {total:+.4f} = {shap.expected_value + total:+.4f}; the model's "
            f"output {shap.output[0]:+.4f} ({shap.scale}): "
            + ("adds up" if error < 1e-6 else "DOES NOT add up")
            + f" (difference {error:.1e})"
        )
    )
    if found.reasons.empty:
        below = "" if found.threshold is None else f" (below the threshold {found.threshold:.4f})"
        out.print(Text(f"no adverse reason codes{below}"))
        return
    reasons = Table(title=Text(f"Adverse reason codes ({found.reasons_from})"))
    for column in ("rank", "feature", "contribution", "reason"):
        reasons.add_column(column)
    for row in found.reasons.itertuples():
        cells = (row.rank, row.feature, f"{row.contribution:+.4f}", row.reason)
        reasons.add_row(*(Text(printable(str(cell))) for cell in cells))
    out.print(reasons)
