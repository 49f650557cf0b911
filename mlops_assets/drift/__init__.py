"""A Dagster-free drift library: column profiles, statistical tests, the drift engine, the
domain classifier, reports and input files. `mlops drift` and the model monitor both use it;
it knows nothing of models, feeds or Dagster."""
