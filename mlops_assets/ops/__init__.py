"""Pipeline operations: the health of every run (read from Dagster's event log) and alerts
(failed runs, drift) to the log and a webhook."""
