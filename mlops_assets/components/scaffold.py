"""What ``dg scaffold defs mlops_assets.components.<Type> <path>`` writes: a ``defs.yaml`` to
fill in, named after its folder, every optional attribute shown commented with its default."""

from __future__ import annotations

import textwrap
from pathlib import Path

import dagster as dg


class DefsYamlScaffolder(dg.Scaffolder):
    """Writes ``TEMPLATE`` (``{type}``: the component type, ``{name}``: the folder's name)."""

    TEMPLATE = ""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        defs_dir = Path(__file__).resolve().parents[1] / "defs"
        if request.project_root is not None and not request.target_path.resolve().is_relative_to(
            defs_dir
        ):
            raise ValueError(f"an instance goes under {defs_dir}, not {request.target_path}")
        request.target_path.mkdir(parents=True, exist_ok=True)
        text = textwrap.dedent(self.TEMPLATE).format(
            type=request.type_name, name=request.target_path.name
        )
        (request.target_path / "defs.yaml").write_text(text)
