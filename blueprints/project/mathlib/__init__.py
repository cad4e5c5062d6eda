"""A tiny package for blueprints/ci.yaml to lint, test and package."""
