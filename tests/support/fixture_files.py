"""Where the fixtures written by the real upstream tools are: tests/fixtures, in the repository.

They are data (a boltdb file ecs-ipam wrote, folders host-local wrote), kept beside the
tests so that a plain clone tests itself; tests/fixtures/README.md says which tool and
version wrote each and how. A missing folder is an error, never a reason to skip (a test
that silently skips everywhere proves nothing).
"""

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

if not (FIXTURES / "README.md").is_file():
    raise RuntimeError(f"the upstream tools' fixtures are missing from {FIXTURES}: the checkout is incomplete")
