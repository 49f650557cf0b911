"""End to end in the browser: Debian's Chromium, driven by Playwright, materializes everything
from the Dagster UI served by `mlops ui`, reads the lineage back from the UI, and opens each
model's overview page on the version "Materialize all" trained (metrics, candidates, gate
decision, plot). That a later run on unchanged data records the same version's metadata is
proved in tests/training/test_model_spec.py and tests/e2e/test_mlops_run.py.

Screenshots of every step go to test-artifacts/ui/; with MLOPS_UPDATE_DOCS_SCREENSHOT=1 the
materialized asset graph is also saved as docs/asset-graph.png (for the README).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.ui.conftest import (
    ARTIFACTS,
    ROOT,
    RUN_TIMEOUT,
    UiServer,
    backfill_succeeded,
    backfill_targets,
    record_timing,
)

pytestmark = pytest.mark.costly  # started first (tests/conftest.py)

DOCS_SCREENSHOT = ROOT / "docs" / "asset-graph.png"
UPDATE_DOCS = os.environ.get("MLOPS_UPDATE_DOCS_SCREENSHOT") == "1"

GROUPS = ("ingestion", "transform", "features", "training", "scoring", "monitoring")
# The lineage the UI must show, each asset an input of the next.
LINEAGE = (
    "landing/applications",
    "raw/applications",
    "staging/stg_applications",
    "intermediate/int_applications_labelled",
    "marts/loan_applications",
    "features/loan_features",
    "models/default_classifier",
    "predictions/loan_default_scores",
    "monitoring/default_classifier/drift_report",
)

# Seconds, for the daemon to run a backfill: its runs one after the other (each waits for the
# pool `duckdb_writer`), the daemon passing every few seconds (mlops_assets/ui_site) to launch
# the next.
BACKFILL_TIMEOUT = 2 * RUN_TIMEOUT
# Each model and the plot its overview page must show: a classifier's ROC curve, a regressor's
# residuals (it has no ROC curve).
MODEL_PLOTS = {
    "models/default_classifier": "plot/roc",
    "models/loss_regressor": "plot/residuals",
}

ASSET_NODES = """
{
  assetNodes {
    assetKey { path }
    isMaterializable
    isPartitioned
    partitionKeys
    partitionStats { numFailed }
    assetMaterializations(limit: 200) { runId partition }
  }
}
"""


class Screenshots:
    """Numbered full-window screenshots in test-artifacts/ui/."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.count = 0

    def __call__(self, name: str) -> Path:
        self.count += 1
        path = ARTIFACTS / f"{self.count:02d}-{name}.png"
        self.page.screenshot(path=path)
        return path


def asset_nodes(server: UiServer) -> dict[str, dict]:
    """Every asset of the code location by key (``a/b``), with its materializations."""
    nodes = server.graphql(ASSET_NODES)["assetNodes"]
    return {"/".join(node["assetKey"]["path"]): node for node in nodes}


def expand_all_groups(page: Page) -> None:
    """The global graph starts with its groups collapsed: its menu's "Expand all groups" opens
    them (the menu says "Collapse all groups" when they already are)."""
    graph = page.locator("svg")
    expect(graph.get_by_text("monitoring", exact=True).first).to_be_visible()
    # The graph's gear (its name is its icon's); the navigation's, when shown, comes first.
    page.get_by_role("button", name="settings", exact=True).last.click()
    toggle = page.get_by_role("menuitem", name=re.compile(r"(Expand|Collapse) all groups"))
    if "Expand all groups" in toggle.inner_text():
        toggle.click()
    page.keyboard.press("Escape")  # the menu stays open after a click
    menu = page.get_by_role("menu")
    try:
        expect(menu).to_have_count(0, timeout=5_000)
    except AssertionError:
        # The menu did not have the focus (the graph re-rendered under it, or nothing was
        # clicked in it): Escape went elsewhere. The gear toggles it closed.
        page.get_by_role("button", name="settings", exact=True).last.click()
    expect(menu).to_have_count(0)
    for group in GROUPS:
        expect(graph.get_by_text(group, exact=True).first).to_be_visible()
    expect(graph.get_by_text("drift_report", exact=True)).to_be_visible()


def launch_backfill_of_all_partitions(page: Page, shot: Screenshots, name: str, days: int) -> str:
    """In the open launch dialog: every partition (one per landing day), launch; the
    backfill's id (from the toast)."""
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Partition selection")).to_be_visible()
    dialog.get_by_role("button", name="All", exact=True).click()
    expect(dialog).to_contain_text(f"{days} partitions")
    launch = dialog.get_by_role("button", name="Launch backfill")
    expect(launch).to_be_enabled()
    shot(f"{name}-launch-dialog")
    launch.click()
    toast = page.get_by_text(re.compile(r"^Created backfill \w+$"))
    expect(toast).to_be_visible()
    shot(f"{name}-backfill-created")
    return toast.inner_text().split()[-1]


def wait_for_backfill(
    server: UiServer, page: Page, shot: Screenshots, backfill_id: str, name: str, launched: float
) -> dict:
    """Wait (polling GraphQL) until the daemon has run the backfill launched at ``launched``
    (time.monotonic()); check that every run and every targeted asset succeeded, and that the
    backfill's runs show as successful in the UI. The backfill, as GraphQL last read it.

    Meanwhile the browser shows a blank page: a Dagster page left open polls its live data
    every 2 s and draws it again: Chromium and the webserver spent ~15 CPU-seconds more on
    it in this test, CPU the backfill's runs wait for on 2 cores."""
    page.goto("about:blank")
    timeout = launched + BACKFILL_TIMEOUT - time.monotonic()
    backfill = server.wait_for_backfill(backfill_id, timeout=timeout)
    record_timing(f"backfill_{name}", time.monotonic() - launched)
    assert backfill_succeeded(backfill), server.backfill_failures(backfill)
    page.goto(f"{server.url}/runs/b/{backfill_id}?tab=runs")
    for run in backfill["runs"]:
        link = f'//a[@href="/runs/{run["runId"]}"]'
        row = page.locator(f'xpath={link}/ancestor::*[contains(., "Success")][1]').first
        expect(row).to_contain_text("Success")
    shot(f"{name}-backfill-runs")
    return backfill


LATEST_MATERIALIZATION = """
query($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    assetMaterializations(limit: 1) {
      runId
      metadataEntries {
        label
        ... on BoolMetadataEntry { boolValue }
        ... on FloatMetadataEntry { floatValue }
        ... on TextMetadataEntry { text }
      }
    }
  }
}
"""


def latest_materializations(server: UiServer, keys: list[str]) -> dict[str, dict]:
    """Each asset's node, with its latest materialization (run and metadata by label)."""
    nodes = server.graphql(
        LATEST_MATERIALIZATION, {"keys": [{"path": key.split("/")} for key in keys]}
    )["assetNodes"]
    return {"/".join(node["assetKey"]["path"]): node for node in nodes}


def check_model_overviews(
    server: UiServer, page: Page, shot: Screenshots, trained_by: set[str]
) -> None:
    """Each model's latest materialization is the one a run of ``trained_by`` wrote when it
    trained the model, and the model's overview page shows that version in full: its holdout
    metrics (a value as recorded), candidates, gate decision and its plot, an image the
    browser decoded."""
    started = time.monotonic()
    latest = latest_materializations(server, list(MODEL_PLOTS))
    for key, plot in MODEL_PLOTS.items():
        [event] = latest[key]["assetMaterializations"]
        metadata = {entry["label"]: entry for entry in event["metadataEntries"]}
        assert event["runId"] in trained_by, (key, event["runId"], trained_by)
        assert metadata["retrained"]["boolValue"] is True, key
        metrics = {k: v for k, v in metadata.items() if k.startswith("holdout/")}
        assert metrics and plot in metadata, (key, sorted(metadata))
        page.goto(f"{server.url}/assets/{key}?view=overview")
        for label in (*metrics, "holdout_metrics", "candidates", "gate_decision", plot):
            expect(page.get_by_text(label, exact=True).first).to_be_visible()
        # A metric's value as recorded, shown beside its name.
        name, entry = next(iter(metrics.items()))
        row = page.locator("tr").filter(has=page.get_by_text(name, exact=True))
        expect(row.first).to_contain_text(str(entry["floatValue"])[:5])
        # The plot: an image decoded in the dialog its "[Show Markdown]" opens.
        row = page.locator("tr").filter(has=page.get_by_text(plot, exact=True))
        row.first.get_by_text("[Show Markdown]").click()
        image = page.get_by_role("dialog").locator(f'img[alt="{plot.split("/")[-1]}"]')
        expect(image).to_be_visible()
        assert image.evaluate("img => img.complete && img.naturalWidth > 0"), key
        shot(f"overview-{key.replace('/', '-')}")
        page.keyboard.press("Escape")
    record_timing("model_overviews", time.monotonic() - started)


def check_lineage_page(
    page: Page, url: str, key: str, materializable: list[str], shot: Screenshots
) -> None:
    """The asset's page shows its inputs upstream and its users downstream, as in LINEAGE,
    and, if it is materializable, its latest materialization."""
    position = LINEAGE.index(key)
    page.goto(f"{url}/assets/{key}")
    upstream = page.get_by_text("Upstream assets", exact=True).locator("xpath=..")
    downstream = page.get_by_text("Downstream assets", exact=True).locator("xpath=..")
    # The link to the neighbour first: once it shows, the section has loaded.
    before = LINEAGE[position - 1] if position > 0 else None
    after = LINEAGE[position + 1] if position + 1 < len(LINEAGE) else None
    for section, neighbour in ((upstream, before), (downstream, after)):
        if neighbour:
            expect(section.locator(f'a[href="/assets/{neighbour}"]')).to_be_visible()
    for section, neighbour in ((upstream, before), (downstream, after)):
        if not neighbour:  # the source has no inputs; the drift report feeds nothing
            expect(section.locator("a")).to_have_count(0)
    if key in materializable:  # landing/* are source specs: observed, never materialized
        expect(page.get_by_text("Latest materialization", exact=True)).to_be_visible()
        expect(page.get_by_text("Never materialized")).to_have_count(0)
    upstream.scroll_into_view_if_needed()
    shot(f"lineage-{key.replace('/', '-')}")


def save_docs_screenshot(page: Page, server: UiServer) -> None:
    """The materialized asset graph, without navigation or side bar, for the README."""
    server.wait_until_idle()  # no asset shown as materializing
    page.set_viewport_size({"width": 1920, "height": 1400})  # zoom controls clear of it
    page.goto(f"{server.url}/asset-groups")
    expect(page.get_by_role("button", name=re.compile(r"Materialize all \(\d+\)"))).to_be_visible()
    page.get_by_role("button", name="Hide navigation").click()
    # The side bar's toggle is the first button left of the asset search.
    page.locator("button:has([aria-label='panel_show_right'])").last.click()
    expand_all_groups(page)
    page.mouse.move(0, 0)
    page.wait_for_timeout(1500)  # let the graph settle after the relayout
    nodes = page.locator("svg foreignObject").all()
    boxes = [box for node in nodes if (box := node.bounding_box())]
    left = min(box["x"] for box in boxes) - 24
    top = min(box["y"] for box in boxes) - 24
    right = max(box["x"] + box["width"] for box in boxes) + 24
    bottom = max(box["y"] + box["height"] for box in boxes) + 24
    DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(
        path=DOCS_SCREENSHOT,
        clip={"x": left, "y": top, "width": right - left, "height": bottom - top},
    )


@pytest.mark.timeout(3600)  # a backstop: each wait fails first, saying what was stuck
def test_materialize_everything_from_the_ui_and_follow_the_lineage(ui_server: UiServer, page: Page):
    shot = Screenshots(page)
    url = ui_server.url
    assets = asset_nodes(ui_server)
    materializable = sorted(key for key, node in assets.items() if node["isMaterializable"])
    assert set(LINEAGE[1:]) <= set(materializable), materializable
    # The daily partitions are the landing days (and a new empty one should the test cross
    # midnight UTC): what "All" in the launch dialog must count.
    partitions = assets["raw/applications"]["partitionKeys"]
    assert set(ui_server.landing_days) <= set(partitions), partitions
    days = len(partitions)

    # The global asset graph, every group expanded.
    page.goto(f"{url}/asset-groups")
    expect(page.get_by_text("Global asset lineage", exact=True)).to_be_visible()
    expand_all_groups(page)
    shot("asset-graph")

    # "Materialize all" covers every materializable asset; the raw tables are partitioned by
    # landing day, so the UI asks which partitions: all of them, as one backfill.
    page.get_by_role("button", name=f"Materialize all ({len(materializable)})…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Launch runs to materialize {len(materializable)} assets")
    launched = time.monotonic()
    backfill_id = launch_backfill_of_all_partitions(page, shot, "materialize-all", days)
    expect(page.get_by_role("dialog")).to_have_count(0)
    materialize_all = wait_for_backfill(
        ui_server, page, shot, backfill_id, "materialize_all", launched
    )

    # Dagster's asset backfill gives partitions only to the partitioned assets it reaches from
    # the root partitions through partitioned assets: a model's drift_report hangs below the
    # unpartitioned features and scores, so "Materialize all" leaves its partitions out. What
    # it left out is launched from the asset's own page, every partition, one backfill each.
    left_out = [key for key in materializable if key not in backfill_targets(materialize_all)]
    launches = []
    for key in left_out:
        assert assets[key]["isPartitioned"], f"Materialize all left out {key}"
        page.goto(f"{url}/assets/{key}")
        page.get_by_role("button", name="Materialize…").click()
        expect(page.get_by_role("dialog")).to_contain_text(key.replace("/", " / "))
        name = key.replace("/", "-")
        launched = time.monotonic()
        launches.append((name, launch_backfill_of_all_partitions(page, shot, name, days), launched))

    # While the daemon runs those, what "Materialize all" wrote, in the browser. Each model's
    # overview page shows the version the backfill trained in full: metrics, candidates, gate
    # decision and plot.
    assert set(MODEL_PLOTS) == {key for key in materializable if key.startswith("models/")}
    check_model_overviews(ui_server, page, shot, {run["runId"] for run in materialize_all["runs"]})
    # The lineage, as each asset's page shows it: its inputs upstream, its users downstream
    # (the assets left out above once their backfills are done).
    for key in LINEAGE:
        if key not in left_out:
            check_lineage_page(page, url, key, materializable, shot)

    backfills = [materialize_all]
    for name, backfill_id, launched in launches:
        backfills.append(wait_for_backfill(ui_server, page, shot, backfill_id, name, launched))
    (ARTIFACTS / "backfills.json").write_text(
        json.dumps(
            [{"id": b["id"], "targets": backfill_targets(b), "runs": b["runs"]} for b in backfills],
            indent=2,
        )
        + "\n"
    )

    # Everything is materialized now, every landing day of every partitioned asset, each by
    # one of the runs launched from the UI.
    runs = {run["runId"] for backfill in backfills for run in backfill["runs"]}
    assets = asset_nodes(ui_server)
    for key in materializable:
        node = assets[key]
        from_ui = [m for m in node["assetMaterializations"] if m["runId"] in runs]
        assert from_ui, (key, node["assetMaterializations"][:3])
        if node["isPartitioned"]:
            assert {m["partition"] for m in from_ui} >= set(ui_server.landing_days), key
            assert node["partitionStats"]["numFailed"] == 0, (key, node["partitionStats"])
    for key in LINEAGE:
        if key in left_out:
            check_lineage_page(page, url, key, materializable, shot)

    # The whole graph again, every asset materialized (green).
    page.goto(f"{url}/asset-groups")
    expand_all_groups(page)
    shot("asset-graph-materialized")
    if UPDATE_DOCS:
        save_docs_screenshot(page, ui_server)
