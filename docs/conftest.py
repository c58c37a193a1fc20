"""pytest over docs/: only the pages' doctests, never the build's outputs or the hooks."""

collect_ignore_glob = ["_build/*", "_generated/*", "auto_examples/*", "api/generated/*", "*.py"]
