"""Landing-file discovery: only regular files named for a landing day up to the horizon are
ingested; every other entry is refused by name (run summary, ledger, metadata) and never read,
never followed, and never reaches the partitions."""

from __future__ import annotations

import os
import re
import tempfile
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_assets.ingestion.landing import (
    NotARegularFile,
    landing_files,
    latest_landing_day,
    partition_key_of,
    record_refused,
    scan_landing,
    sha256_of,
)
from mlops_assets.run.plan import landing_bytes, landing_dates, refused_landing_files
from mlops_assets.run.report import RunReport
from mlops_assets.sample_data.generator import OUTCOME_COLUMNS
from mlops_assets.settings import Settings, get_settings
from mlops_assets.text import printable

HEADER = ",".join(OUTCOME_COLUMNS)
GOOD = f"{HEADER}\nA1,2025-01-05,0,0\n"
LATEST = date(2025, 1, 31)

# Every entry below but the good file is refused; the expected reason is a fragment of its text.
ODD = {
    "2025-01-05.csv\n": "not named YYYY-MM-DD.csv",  # "$" matched before the line break
    "2025-02-30.csv": "2025-02-30 is not a calendar date",
    "2025-13-45.csv": "2025-13-45 is not a calendar date",
    "\u0662\u0660\u0662\u0665-\u0660\u0661-\u0660\u0665.csv": "not named YYYY-MM-DD.csv",
    "2099-01-01.csv": "dated after 2025-01-31",
    "notes.txt": "not named YYYY-MM-DD.csv",
    "2025-01-06.csv": "a symbolic link",  # to a readable file outside the landing folder
    "2025-01-07.csv": "a symbolic link",  # dangling
    "2025-01-08.csv": "a symbolic link",  # to a FIFO
    "2025-01-09.csv": "a named pipe (FIFO)",
    "x.csv": "a folder",
    "![x](http:evil.example)": "not named YYYY-MM-DD.csv",
}


def odd_landing(root: Path, source: str = "outcomes") -> Path:
    """A landing folder with one good file and every kind of entry that must be refused."""
    folder = root / "landing" / source
    folder.mkdir(parents=True)
    (folder / "2025-01-05.csv").write_text(GOOD)
    secret = root / "secret.csv"
    secret.write_text(GOOD.replace("A1", "SECRET"))
    special = {"2025-01-06.csv", "2025-01-07.csv", "2025-01-08.csv", "2025-01-09.csv", "x.csv"}
    for name in ODD.keys() - special:
        (folder / name).write_text(GOOD)
    (folder / "x.csv").mkdir()
    os.symlink(secret, folder / "2025-01-06.csv")
    os.symlink(root / "nowhere.csv", folder / "2025-01-07.csv")
    os.mkfifo(root / "pipe")
    os.symlink(root / "pipe", folder / "2025-01-08.csv")
    os.mkfifo(folder / "2025-01-09.csv")
    (folder / ".hidden.csv").write_text(GOOD)  # dot-files stay ignored, not reported
    return root / "landing"


def test_only_regular_files_named_for_a_landing_day_are_found_the_rest_refused(tmp_path):
    landing = odd_landing(tmp_path)
    scan = scan_landing(landing, "outcomes", LATEST)
    assert scan.files == [landing / "outcomes" / "2025-01-05.csv"]
    reasons = {r.path: r.reason for r in scan.refused}
    assert set(reasons) == {f"outcomes/{name}" for name in ODD}
    for name, reason in ODD.items():
        assert reason in reasons[f"outcomes/{name}"], name
    # landing_files (what ingestion and the sensor read) holds the same, with or without days.
    assert landing_files(landing, "outcomes", latest=LATEST) == scan.files
    assert landing_files(landing, "outcomes", ["2025-02-30", "2025-01-06"], LATEST) == []


def test_a_file_name_is_a_landing_day_only_in_ascii_digits_for_a_real_date():
    assert partition_key_of(Path("2025-01-05.csv")) == "2025-01-05"
    arabic_indic = "\u0662\u0660\u0662\u0665-\u0660\u0661-\u0660\u0665.csv"
    for name in ("2025-01-05.csv\n", "2025-02-30.csv", "2025-13-45.csv", "2025-1-05.csv",
                 arabic_indic, "2025-01-05.CSV"):  # fmt: skip
        assert partition_key_of(Path(name)) is None, name


@pytest.mark.parametrize("name", ["outcomes-feb.csv", "2025-02-30.csv", "2025-01-05.csv\n"])
def test_the_loader_refuses_a_file_not_named_for_a_landing_day_given_directly(
    tmp_path, name, keyring
):
    from mlops_assets.ingestion.files import IngestionError
    from mlops_assets.ingestion.loader import ingest_file
    from tests.ingestion.conftest import IDENTIFIERS, SOURCES, ensure_tables

    (tmp_path / "outcomes").mkdir()
    path = tmp_path / "outcomes" / name
    path.write_text(GOOD)
    con = duckdb.connect()
    ensure_tables(con)
    with pytest.raises(IngestionError, match=r"YYYY-MM-DD\.csv"):
        ingest_file(con, tmp_path, path, SOURCES["outcomes"], IDENTIFIERS, keyring=keyring)
    assert con.execute("select count(*) from raw.outcomes").fetchone()[0] == 0


@pytest.mark.parametrize("name", ["2025-01-06.csv", "2025-01-08.csv", "2025-01-09.csv"])
def test_a_link_or_fifo_put_in_place_of_a_found_file_fails_that_file_alone(tmp_path, name, keyring):
    """Between the scan and the load a file may be swapped: the loader never follows a link
    to read, say, the keyring, nor waits on a FIFO."""
    from mlops_assets.ingestion.files import IngestionError
    from mlops_assets.ingestion.loader import ingest_file
    from tests.ingestion.conftest import IDENTIFIERS, SOURCES, ensure_tables

    landing = odd_landing(tmp_path)
    con = duckdb.connect()
    ensure_tables(con)
    with pytest.raises(IngestionError, match="not a regular file"):
        ingest_file(
            con,
            landing,
            landing / "outcomes" / name,
            SOURCES["outcomes"],
            IDENTIFIERS,
            keyring=keyring,
        )
    assert con.execute("select count(*) from raw.outcomes").fetchone()[0] == 0


def test_the_horizon_is_today_plus_the_setting_and_accepts_tomorrow(tmp_path, monkeypatch):
    today = date.today()
    assert latest_landing_day(0) in (today, today + timedelta(days=1))  # UTC vs local
    monkeypatch.delenv("MLOPS_LANDING_HORIZON_DAYS", raising=False)
    assert get_settings().landing_horizon_days == 1  # default: tomorrow
    monkeypatch.setenv("MLOPS_LANDING_HORIZON_DAYS", "7")
    assert get_settings().landing_horizon_days == 7
    monkeypatch.setenv("MLOPS_LANDING_HORIZON_DAYS", "-1")
    with pytest.raises(ValueError, match="MLOPS_LANDING_HORIZON_DAYS"):
        get_settings()
    folder = tmp_path / "outcomes"
    folder.mkdir()
    latest = latest_landing_day(1)
    for day in (latest, latest + timedelta(days=1)):
        (folder / f"{day}.csv").write_text(GOOD)
    scan = scan_landing(tmp_path, "outcomes", latest)
    assert [p.name for p in scan.files] == [f"{latest}.csv"]
    assert [r.path for r in scan.refused] == [f"outcomes/{latest + timedelta(days=1)}.csv"]


def test_the_partitions_end_on_the_latest_landing_day():
    from mlops_assets.partitions import landing_days

    for horizon in (0, 1, 7):
        last = landing_days("2025-01-01", horizon).get_last_partition_key()
        assert last == str(latest_landing_day(horizon))


def test_sha256_never_follows_a_link_nor_blocks_on_a_fifo(tmp_path):
    landing = odd_landing(tmp_path)
    folder = landing / "outcomes"
    assert len(sha256_of(folder / "2025-01-05.csv")) == 64
    for name in ("2025-01-06.csv", "2025-01-08.csv", "2025-01-09.csv"):
        with pytest.raises(NotARegularFile):
            sha256_of(folder / name)


def test_the_ledger_lists_the_entries_refused_now(tmp_path):
    landing = odd_landing(tmp_path)
    con = duckdb.connect()
    refused = scan_landing(landing, "outcomes", LATEST).refused
    record_refused(con, "outcomes", refused)
    record_refused(con, "outcomes", refused)  # idempotent
    record_refused(con, "applications", [])
    rows = con.execute("select path, source, reason from audit.refused_files order by 1").fetchall()
    assert len(rows) == len(ODD)
    # Stored as text: the trailing line break shows as an escape.
    assert ("outcomes/2025-01-05.csv\\n", "outcomes", ODD["2025-01-05.csv\n"]) in [
        (p, s, r[: len(ODD["2025-01-05.csv\n"])]) for p, s, r in rows
    ]
    (landing / "outcomes" / "notes.txt").unlink()
    record_refused(con, "outcomes", scan_landing(landing, "outcomes", LATEST).refused)
    paths = [p for (p,) in con.execute("select path from audit.refused_files").fetchall()]
    assert "outcomes/notes.txt" not in paths and len(paths) == len(ODD) - 1


def test_the_run_plans_only_real_landing_days_and_names_the_refused(tmp_path):
    """`mlops run` creates its Dagster run from these days: a bad key there crashed it."""
    settings = Settings(home=tmp_path)
    odd_landing(tmp_path)
    assert landing_dates(settings) == ["2025-01-05"]
    assert landing_dates(settings, pending_only=True) == ["2025-01-05"]
    refused = {r.path for r in refused_landing_files(settings)}
    assert refused == {f"outcomes/{name}" for name in ODD}
    # What the run's days hold, read by size alone: a link, a FIFO or a folder named for a day
    # counts nothing (and is never opened).
    odd_days = sorted({name[:10] for name in ODD} | {"2025-01-05"})
    assert landing_bytes(settings, odd_days) == len(GOOD.encode())
    assert landing_bytes(settings, ["2025-01-04"]) == 0


def test_the_run_summary_prints_refused_names_as_text(capsys):
    from mlops_assets.cli.common import console
    from mlops_assets.cli.pipeline import print_report

    refused = [printable("outcomes/[/b][link=x]y.csv\n: a folder")]  # as the runner makes it
    report = RunReport("r1", True, 1.0, refused_files=refused)
    with console.capture() as captured:
        print_report(report, Settings(home=Path("/nowhere")))
    assert "refused, not ingested: outcomes/[/b][link=x]y.csv\\n: a folder" in captured.get()


def test_the_ingestion_asset_records_and_lists_refused_files_as_markdown_text(tmp_path, keyring):
    from mlops_assets import catalogue
    from mlops_assets.ingestion.assets import build_source_defs
    from mlops_assets.ingestion.sources import identifier_names
    from mlops_assets.resources import KeyringResource, LandingZone, WarehouseResource

    landing = odd_landing(tmp_path)
    link = "![x](http://evil.example/i.png)"
    (landing / "outcomes" / "2025-01-04.csv").write_text(f"{HEADER},{link},{link}\nA,b,0,0,1,2\n")
    feeds = catalogue.sources()
    [outcomes] = [
        a
        for a in build_source_defs(feeds["outcomes"], identifier_names(feeds.values())).assets
        if a.key.path == ["raw", "outcomes"]
    ]
    warehouse = tmp_path / "warehouse.duckdb"
    resources = {
        "warehouse": WarehouseResource(path=str(warehouse)),
        "landing": LandingZone(path=str(landing)),
        "keyring": KeyringResource(path=str(keyring.path)),
    }
    result = dg.materialize([outcomes], partition_key="2025-01-05", resources=resources)
    [materialization] = result.asset_materializations_for_node("raw__outcomes")
    metadata = materialization.metadata
    assert metadata["files_loaded"].value == 1
    assert metadata["files_refused"].value == len(ODD)
    listed = metadata["refused_files"].value
    assert "2025-02-30.csv" in listed and "x.csv" in listed
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "files_ingested"]
    assert check.passed  # a refused entry is reported, it does not block the pipeline
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select count(*) from audit.refused_files").fetchone()[0] == len(ODD)
        assert con.execute("select count(*) from raw.outcomes").fetchone()[0] == 1

    # The file repeating a markdown image as a header fails (another day): its message is text.
    result = dg.materialize(
        [outcomes], partition_key="2025-01-04", resources=resources, raise_on_error=False
    )
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "files_ingested"]
    assert not check.passed
    for markdown in (check.metadata["failed_files"].value, listed):
        # No markdown punctuation is left unescaped: no link, no image the UI would fetch.
        assert not re.search(r"(?<!\\)[\[\]()!]", re.sub(r"\\\\", "", markdown)), markdown


# Names a feed or a careless operator may drop into a landing folder: near-dates, other scripts'
# digits, SQL, markup, control characters, bytes that are not UTF-8 (from os.fsencode).
_NAME_PARTS = st.sampled_from(
    [
        "2025-01-05",
        "2025-02-30",
        "2025-1-5",
        "\u0662\u0660\u0662\u0665",  # Arabic-Indic digits
        "\uff12\uff10\uff12\uff15",  # fullwidth digits
        "'",
        '"',
        ";",
        "--",
        "drop table x",
        "[/b]",
        "[link=http://x]",
        "![i](http://x/i.png)",
        "`",
        "\x1b[2J",
        "\u202e",
        "\n",
        "\r",
        "\t",
        ".csv",
        ".CSV",
        " ",
        "\udcff",  # a byte that is not UTF-8, as os.fsdecode shows it
        "%00",
        "$(touch x)",
        "*",
        "?",
    ]
)
hostile_names = st.lists(
    st.one_of(_NAME_PARTS, st.text(min_size=1, max_size=8)), min_size=1, max_size=5
).map("".join)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(names=st.lists(hostile_names, min_size=1, max_size=6, unique=True))
def test_a_hostile_file_name_is_a_landing_day_or_refused_by_name_and_never_runs(tmp_path, names):
    """The hostile-input invariant for file names: the scan never raises; each entry is either a
    landing day's file (ASCII date, calendar date, not after the horizon) or refused under its
    own name; the ledger of refusals stores names as data (no other statement runs); the run
    plans only real days."""
    home = Path(tempfile.mkdtemp(dir=tmp_path))
    folder = home / "landing" / "outcomes"
    folder.mkdir(parents=True)
    created = set()
    for name in names:
        raw = os.fsencode(name)
        if b"/" in raw or b"\x00" in raw or name in (".", "..") or len(raw) > 255:
            continue
        if name.startswith("."):
            continue  # hidden files are ignored, by design
        (folder / name).write_text(GOOD)
        created.add(name)
    scan = scan_landing(home / "landing", "outcomes", LATEST)
    accepted = {p.name for p in scan.files}
    refused = {r.path for r in scan.refused}
    assert accepted | {p.removeprefix("outcomes/") for p in refused} == created
    for name in accepted:
        assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\.csv", name, re.ASCII)
        assert date.fromisoformat(name[:10]) <= LATEST
    con = duckdb.connect()
    con.execute("create table canary as select 1 as x")
    record_refused(con, "outcomes", scan.refused)
    stored = {p for (p,) in con.execute("select path from audit.refused_files").fetchall()}
    assert stored == {printable(p) for p in refused}
    assert con.execute("select count(*) from canary").fetchone()[0] == 1
    days = landing_dates(Settings(home=home))
    assert days == sorted(name[:10] for name in accepted if name[:10] >= "2025-01-01")


def test_the_bytes_of_a_runs_days_count_the_files_of_every_feed_on_those_days(tmp_path):
    """The warm-up's measure of a run's days: every feed's file of those days, read from the
    folder (whether ingested before or not: a run doing a failed run's days again reads them)."""
    from mlops_assets.sample_data.generator import GeneratorConfig, generate

    settings = Settings(home=tmp_path)
    generate(GeneratorConfig(days=3, rows_per_day=20, seed=1), settings.landing_dir)
    files = sorted(settings.landing_dir.glob("*/*.csv"))
    sizes: dict[str, int] = {}
    for path in files:
        sizes[path.stem] = sizes.get(path.stem, 0) + path.stat().st_size
    assert len({p.parent.name for p in files if p.stem == "2025-01-02"}) >= 2  # two feeds
    assert landing_bytes(settings, ["2025-01-02"]) == sizes["2025-01-02"]
    assert landing_bytes(settings, sorted(sizes)) == sum(sizes.values())
