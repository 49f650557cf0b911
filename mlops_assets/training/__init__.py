"""Training: candidates, time-ordered validation, a search on Dask, the registry and the gate."""
