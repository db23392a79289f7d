"""The report stage's parts: gather runs, reference optima f*, tables, figures, lecture studies,
pages."""
