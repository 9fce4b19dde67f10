"""cnipamctl, the operator's command line over the plugin's store.

Unlike the plugin (a new process per CNI call, where every import is measured), the CLI
is started by a person or a script, so it uses click for commands, options and prompts
and rich for tables and progress. Nothing in the plugin imports this package.
"""
