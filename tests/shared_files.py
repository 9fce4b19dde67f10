"""Where the project's shared/ folder is: beside the checkout, as in CI's fresh clone.

The fixtures there were written by the real upstream tools; a missing folder is an
error, never a reason to skip (a test that silently skips everywhere proves nothing).
"""

from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"

if not (FIXTURES / "README.md").is_file():
    raise RuntimeError(f"shared fixtures not found at {FIXTURES}: the tests expect shared/ beside the checkout")
