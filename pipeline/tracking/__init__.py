"""MLflow tracking and the sweep-job environment protocol."""
