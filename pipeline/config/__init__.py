"""The config boundary: structured-config schemas, checks, budgets and the project path policy."""
