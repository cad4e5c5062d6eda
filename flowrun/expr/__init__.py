"""The safe expression language: an allow-list compiler over `ast` and its run-time limits."""
