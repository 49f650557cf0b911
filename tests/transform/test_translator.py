"""dbt sources and models get asset keys that mirror their warehouse tables."""

import dagster as dg
import pytest

from mlops_assets.transform.assets import PlatformTranslator


@pytest.mark.parametrize("source_name", ["raw", "loan_feeds", "my_team_landing"])
def test_a_source_table_in_schema_raw_is_its_feeds_raw_asset_whatever_the_source_is_called(
    source_name,
):
    """Before, the key was [source name, table]: a team naming its dbt source anything but
    `raw` got a second, disconnected asset instead of lineage to the feed's raw asset."""
    source = {"resource_type": "source", "source_name": source_name, "schema": "raw"}
    translator = PlatformTranslator()
    assert translator.get_asset_key({**source, "name": "my_feed"}) == dg.AssetKey(
        ["raw", "my_feed"]
    )
    # A source whose dbt name differs from its table: the table is the feed.
    renamed = {**source, "name": "feed", "identifier": "my_feed"}
    assert translator.get_asset_key(renamed) == dg.AssetKey(["raw", "my_feed"])


def test_models_are_keyed_by_schema_and_name():
    model = {"resource_type": "model", "schema": "staging", "name": "stg_my_feed"}
    assert PlatformTranslator().get_asset_key(model) == dg.AssetKey(["staging", "stg_my_feed"])
    assert PlatformTranslator().get_group_name(model) == "transform"
