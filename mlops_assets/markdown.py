"""Markdown for Dagster metadata: what the UI renders as tables."""


def md_table(header: tuple[str, ...], rows: list[tuple]) -> str:
    """A markdown table; pipes inside values are escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)
