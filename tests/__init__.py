"""The test suite. tests/<name>/ holds the tests of cnipam/<name>/; tests/plugin/ those of
the plugin executable (plugin.py, commands.py), tests/e2e/ those that run real runtimes,
tests/campaigns/ and tests/bench/ those of the scripts in campaigns/ and bench/, and
tests/test_security.py the checks behind docs/security.md, across all of them. The
helpers they share are tests/support/; the upstream tools' files are tests/fixtures/.
"""
