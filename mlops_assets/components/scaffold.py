"""What ``dg scaffold defs mlops_assets.components.<Type> <path>`` writes: a ``defs.yaml`` to
fill in, named after its folder, every optional attribute shown commented with its default."""

from __future__ import annotations

import textwrap

import dagster as dg


class DefsYamlScaffolder(dg.Scaffolder):
    """Writes ``TEMPLATE`` (``{type}``: the component type, ``{name}``: the folder's name)."""

    TEMPLATE = ""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        request.target_path.mkdir(parents=True, exist_ok=True)
        text = textwrap.dedent(self.TEMPLATE).format(
            type=request.type_name, name=request.target_path.name
        )
        (request.target_path / "defs.yaml").write_text(text)
