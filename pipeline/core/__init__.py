"""The numerical core: objectives, solvers, transforms and theory on plain arrays (no Hydra, MLflow
or files)."""
