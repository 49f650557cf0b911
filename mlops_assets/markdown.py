"""Metadata for the Dagster UI: markdown tables and the row-flow numbers every stage reports."""

import dagster as dg


def md_table(header: tuple[str, ...], rows: list[tuple]) -> str:
    """A markdown table; pipes inside values are escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)


def flow_metadata(rows_in: int, rows_out: int) -> dict:
    """Rows in, rows out, rows quarantined and the quarantine rate of a stage's run: the same
    keys on every asset that quarantines, read by pipeline health (monitoring.pipeline_runs)."""
    quarantined = rows_in - rows_out
    return {
        "rows_in": rows_in,
        "rows_out": rows_out,
        "rows_quarantined": quarantined,
        "quarantine_rate": dg.MetadataValue.float(quarantined / rows_in if rows_in else 0.0),
    }


def placement_metadata(placement: dict[str, int]) -> dg.JsonMetadataValue:
    """Tasks per place (a Dask worker address, or ``local``): where a stage's parallel work ran,
    the same key on every asset that fans out."""
    return dg.MetadataValue.json(dict(sorted(placement.items())))
