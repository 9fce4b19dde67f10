"""Prometheus metrics of the daemons (`cnipamd`, `cnipam-docker`) and of `cnipamctl metrics`.

Built on `prometheus_client`, the Prometheus project's own Python client: it writes the
text exposition format (escaping, `# HELP`/`# TYPE`, histogram buckets) exactly as
Prometheus parses it, serves it over HTTP from a thread, and writes node_exporter's
textfile atomically; a hand-made writer would re-implement all three. It is imported only
here, and this package only by a daemon started with `--metrics-address` and by
`cnipamctl metrics`: the plugin, which starts once per CNI call, never loads it (a test
checks with `python -X importtime`).

Names follow Prometheus's conventions: the `cnipam_` prefix, base units (`_seconds`,
`_addresses`), `_total` on counters, histograms for latency. The pool gauges are computed
from the store at scrape time (`pools.py`), so they are right whoever changed the store;
call counts and latencies can only come from a process that lives across calls, so they
are the daemons' (`daemon.py`). The README's Monitoring section lists every name.
"""
