"""The Pandera contract: every check fails on purpose, failing rows are quarantined with the
names of their checks, and no row is ever lost (clean + quarantined = rows in)."""

import pandas as pd
import pytest

from mlops_assets.features.assets import contract_check_result
from mlops_assets.features.contract import LoanFeatures
from mlops_assets.features.validation import (
    FEATURE_TABLE,
    QUARANTINE_TABLE,
    ContractReport,
    apply_contract,
    publish,
)
from mlops_assets.markdown import md_text
from tests.features.conftest import ROWS

ROW = 5  # the row a mutation breaks


def verdict(con, **kwargs) -> tuple[ContractReport, pd.DataFrame, pd.DataFrame]:
    report = apply_contract(con, **kwargs)
    publish(con)
    clean = con.execute(f"select application_id from {FEATURE_TABLE}").df()
    quarantined = con.execute(
        f"select application_id, failed_checks, record from {QUARANTINE_TABLE}"
    ).df()
    return report, clean, quarantined


def assert_nothing_lost(con, clean: pd.DataFrame, quarantined: pd.DataFrame) -> None:
    staged = con.execute("select count(*) from _features").fetchall()[0][0]
    assert len(clean) + len(quarantined) == staged == ROWS


def test_clean_rows_pass_every_check(staged):
    report, clean, quarantined = verdict(staged)
    assert report.rows_quarantined == 0 and not report.dataset_failures, report.failures_by_check
    assert len(clean) == ROWS and quarantined.empty
    assert report.passed(max_failure_rate=0.0)


# --- one failing case per column check, generated from the contract itself ---------------


def _violation(check) -> object:
    """A value that breaks ``check`` (built-in Pandera checks of the contract's columns)."""
    stats = check.statistics
    if check.name == "greater_than":
        return stats["min_value"]
    if check.name == "greater_than_or_equal_to":
        return stats["min_value"] - 1
    if check.name == "less_than_or_equal_to":
        return stats["max_value"] + 1
    if check.name == "isin":
        allowed = stats["allowed_values"]
        return max(allowed) + 1 if isinstance(allowed[0], int) else "not-in-the-catalogue"
    if check.name == "str_matches":
        return "CUS-0000042"
    if check.name == "str_length":
        return ""
    raise AssertionError(f"no violation known for {check.name}: add one to this test")


def _column_check_cases():
    for name, column in LoanFeatures.to_schema().columns.items():
        for check in column.checks:
            if check.name == "min_completeness":
                continue  # a whole-column check: test_each_empty_feature_column_fails_every_row
            error = check.error
            label = f"{name}:{error if len(error) <= 40 else check.name}"
            yield pytest.param(name, _violation(check), label, id=label)
        if not column.nullable:
            yield pytest.param(name, None, f"{name}:not_nullable", id=f"{name}:not_nullable")


@pytest.mark.parametrize(("column", "value", "label"), list(_column_check_cases()))
def test_each_column_check_quarantines_the_row_that_breaks_it(staged, column, value, label):
    staged.execute(f'update _features set "{column}" = ? where rowid = ?', [value, ROW])
    broken_id = staged.execute(
        "select application_id from _features where rowid = ?", [ROW]
    ).fetchall()[0][0]
    report, clean, quarantined = verdict(staged)
    assert report.failures_by_check[label] == 1, report.failures_by_check
    assert quarantined["failed_checks"].map(lambda checks: label in checks).sum() == 1
    if column != "application_id":
        assert quarantined["application_id"].tolist() == [broken_id]
    assert_nothing_lost(staged, clean, quarantined)


def test_duplicate_application_ids_are_both_quarantined(staged):
    staged.execute(
        "update _features set application_id = (select application_id from _features "
        "where rowid = 1) where rowid = 400"
    )
    report, clean, quarantined = verdict(staged, chunk_rows=50)  # 12 chunks: ids meet anyway
    assert report.chunks == 12
    assert report.failures_by_check["application_id:field_uniqueness"] == 2
    assert len(quarantined) == 2 and quarantined["application_id"].nunique() == 1
    assert_nothing_lost(staged, clean, quarantined)


# --- cross-column rules and the statistical check ----------------------------------------

TABLE_RULE_CASES = {
    "history_consistent": "update _features set prior_defaults = prior_applications + 1 "
    f"where rowid = {ROW}",
    "label_consistent": "update _features set defaulted = null "
    "where rowid = (select min(rowid) from _features where is_labelled)",
    "loss_within_loan": "update _features set loss_amount = amount + 1 "
    "where rowid = (select min(rowid) from _features where is_labelled)",
    "outcome_after_application": "update _features set outcome_observed_at = applied_at "
    "- interval 3 day where rowid = (select min(rowid) from _features where is_labelled)",
}


@pytest.mark.parametrize("rule", list(TABLE_RULE_CASES))
def test_each_cross_column_rule_quarantines_the_row_that_breaks_it(staged, rule):
    staged.execute(TABLE_RULE_CASES[rule])
    report, clean, quarantined = verdict(staged)
    assert report.failures_by_check[rule] == 1, report.failures_by_check
    assert len(quarantined) == 1 and rule in quarantined["failed_checks"][0]
    assert_nothing_lost(staged, clean, quarantined)


def test_implausible_default_rate_fails_the_table_and_quarantines_nothing(staged):
    staged.execute("update _features set defaulted = true, loss_amount = 0 where is_labelled")
    report, clean, quarantined = verdict(staged)
    assert report.dataset_failures == ["default_rate_plausible"]
    assert quarantined.empty and len(clean) == ROWS  # the rows themselves are valid
    assert not report.passed(max_failure_rate=1.0)


def test_every_rule_of_the_contract_has_a_failing_case():
    rules = {check.name for check in LoanFeatures.to_schema().checks}
    assert rules == {*TABLE_RULE_CASES, "default_rate_plausible"}


# --- bad input: each names the column and the check, and loses no row --------------------


def test_missing_column_quarantines_every_row_naming_the_column(staged):
    staged.execute("alter table _features drop column amount")
    report, clean, quarantined = verdict(staged)
    assert report.failures_by_check["amount:column_in_dataframe"] == ROWS
    assert clean.empty
    assert_nothing_lost(staged, clean, quarantined)


def test_unexpected_column_quarantines_every_row_naming_the_column(staged):
    staged.execute("alter table _features add column full_name varchar")
    report, clean, quarantined = verdict(staged)
    assert report.failures_by_check["full_name:column_in_schema"] == ROWS
    assert_nothing_lost(staged, clean, quarantined)


def test_wrong_dtype_quarantines_every_row_naming_the_column(staged):
    staged.execute("alter table _features alter bureau_score type varchar")
    report, clean, quarantined = verdict(staged)
    assert report.failures_by_check["bureau_score:dtype('Int64')"] == ROWS
    assert_nothing_lost(staged, clean, quarantined)


def _completeness_cases():
    for name, column in LoanFeatures.to_schema().columns.items():
        for check in column.checks:
            if check.name == "min_completeness":
                yield pytest.param(name, f"{name}:{check.error}", id=f"{name}:{check.error}")


@pytest.mark.parametrize(("column", "label"), list(_completeness_cases()))
def test_each_empty_feature_column_fails_every_row(staged, column, label):
    staged.execute(f'update _features set "{column}" = null')
    report, clean, quarantined = verdict(staged)
    assert report.failures_by_check[label] == ROWS
    assert clean.empty
    assert_nothing_lost(staged, clean, quarantined)


def test_columns_that_may_be_empty_are_exempt_from_completeness(staged):
    """No returning customer yet, no label yet: legitimately empty, not a broken feed."""
    staged.execute(
        "update _features set days_since_prior_application = null, prior_applications = 0, "
        "prior_defaults = 0, prior_repaid = 0, is_labelled = false, defaulted = null, "
        "loss_amount = null, outcome_observed_at = null"
    )
    report, clean, _ = verdict(staged)
    assert report.rows_quarantined == 0, report.failures_by_check
    assert len(clean) == ROWS


def test_unseen_category_quarantines_only_its_row(staged):
    staged.execute(f"update _features set purpose = 'crypto_mining' where rowid = {ROW}")
    report, clean, quarantined = verdict(staged)
    assert report.failures_by_check == {"purpose:isin": 1}
    assert '"purpose":"crypto_mining"' in quarantined["record"][0]  # the row is kept whole
    assert_nothing_lost(staged, clean, quarantined)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_and_infinity_fail_the_range_while_null_is_a_missing_value(staged, value):
    staged.execute("update _features set annual_income = null where rowid = 1")  # allowed
    staged.execute(f"update _features set annual_income = '{value}'::double where rowid = {ROW}")
    report, clean, quarantined = verdict(staged)
    assert set(report.failures_by_check) <= {
        "annual_income:greater_than(0)",
        "annual_income:less_than_or_equal_to(100000000)",
    }
    assert report.rows_quarantined == 1
    assert_nothing_lost(staged, clean, quarantined)


# --- accounting, threshold, atomicity, metadata -------------------------------------------


def test_accounting_holds_with_many_failures_across_chunks(staged):
    staged.execute("update _features set amount = -1 where rowid % 7 = 0")
    staged.execute("update _features set channel = 'fax' where rowid % 11 = 0")
    report, clean, quarantined = verdict(staged, chunk_rows=64)
    expected = staged.execute(
        "select count(*) from _features where rowid % 7 = 0 or rowid % 11 = 0"
    ).fetchall()[0][0]
    assert report.rows_quarantined == len(quarantined) == expected
    assert report.rows_clean == len(clean) == ROWS - expected
    assert set(clean["application_id"]).isdisjoint(quarantined["application_id"])
    both = quarantined["failed_checks"].map(
        lambda checks: {"amount:greater_than(0)", "channel:isin"} <= set(checks)
    )
    assert (
        both.sum()
        == staged.execute("select count(*) from _features where rowid % 77 = 0").fetchall()[0][0]
    )


def test_failure_rate_threshold_decides_the_check(staged):
    staged.execute("update _features set amount = -1 where rowid < 6")  # 6 of 600 = 1%
    report, _, _ = verdict(staged)
    assert report.failure_rate == pytest.approx(0.01)
    assert contract_check_result(report, max_failure_rate=0.01).passed
    assert not contract_check_result(report, max_failure_rate=0.005).passed


def test_check_metadata_counts_failures_per_check_and_redacts_keys(staged):
    staged.execute(f"update _features set customer_key = 'CUS-0000042' where rowid = {ROW}")
    staged.execute("update _features set amount = -1 where rowid in (1, 2)")
    report, _, _ = verdict(staged)
    result = contract_check_result(report, max_failure_rate=0.01)
    by_check = result.metadata["failures_by_check"].value
    assert f"| {md_text('amount:greater_than(0)')} | 2 |" in by_check
    assert md_text("customer_key:str_matches") in by_check
    sample = result.metadata["failure_sample"].value
    assert "CUS-0000042" not in sample and md_text("<redacted>") in sample
    assert "-1.0" in sample


def test_a_failed_publish_leaves_the_previous_tables(staged):
    verdict(staged)
    staged.execute("drop table _contract_failures")  # the verdicts are gone: publish must fail
    with pytest.raises(Exception, match="_contract_failures"):
        publish(staged)
    assert staged.execute(f"select count(*) from {FEATURE_TABLE}").fetchall()[0][0] == ROWS


def test_a_rerun_on_the_same_rows_keeps_the_quarantine_unchanged(staged):
    staged.execute("update _features set amount = -1 where rowid < 3")
    verdict(staged)
    first = staged.execute(f"select * from {QUARANTINE_TABLE} order by application_id").df()
    verdict(staged)
    again = staged.execute(f"select * from {QUARANTINE_TABLE} order by application_id").df()
    pd.testing.assert_frame_equal(first, again)
    assert len(first) == 3
