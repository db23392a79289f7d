"""The config boundary: structured-config schemas, checks and the project path policy."""
