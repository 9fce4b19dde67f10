"""`cnipamd`, the optional node agent: one long-running process per host that keeps the
stores open and answers the calls plugins forward to it over a UNIX socket, and can
release leaked leases on a schedule.

The plugin side of the conversation is `cnipam.agent_client` and the bytes on the wire
are `cnipam.agent_protocol`; both live outside this package so the plugin's forward path
never imports it.
"""
