"""Feature layer: model-ready features from the marts, checked against a Pandera contract."""
