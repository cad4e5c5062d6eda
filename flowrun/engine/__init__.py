"""Running a graph: the pure scheduler, routing, the driver loop, node kinds and backends.

Stdlib only, and it never imports `flowrun.store` or `flowrun.display`: those are sinks of the
events the driver emits. (Named `engine`, not `run`, so that `flowrun.run` stays the API call.)
"""
