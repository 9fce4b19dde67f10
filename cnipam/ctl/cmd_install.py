"""`install-plugin`: make this installation's plugin executables visible to runtimes, in a
CNI bin folder (`/opt/cni/bin` unless told otherwise).

The folder gets symbolic links, not copies: the launchers find their site-packages by
following their own links (a copy would fall back to the slower `site` start-up), and a
`pip install --upgrade` in the same environment then needs nothing more. The launchers
are found in the package's installed-file record, so the links point into whichever
environment runs this command (a venv, `--user`, a system prefix) and never at a guessed
folder.

Running it again changes nothing. A file of the same name that is something else (a real
`ecs-ipam` from Amazon, a link into another environment) is refused unless `--force`, and
then nothing is changed at all; a link whose target is gone is stale and is replaced.
Each link is made under a temporary name and renamed over the old one, so a runtime never
finds the name missing.
"""

from __future__ import annotations

import os
from importlib import metadata

import click

from .failures import CtlError
from .output import print_lines

PLUGINS = ("cnipam", "ecs-ipam")  # the CNI `type`s: ecs-ipam is the one the ECS agent asks for
DEFAULT_BIN_DIR = "/opt/cni/bin"
DONE = {"create": "linked", "replace": "replaced", "unchanged": "unchanged"}  # plan -> what the report says


def launchers() -> dict[str, str]:
    """Plugin name -> the absolute path of this installation's launcher."""
    try:
        distribution = metadata.distribution("cnipam")
    except metadata.PackageNotFoundError:
        raise CtlError("cnipam's installation record is missing: reinstall it with pip") from None
    found = {}
    for file in distribution.files or []:
        if file.name in PLUGINS and len(file.parts) > 1 and file.parts[-2] == "bin":
            path = os.path.normpath(os.path.abspath(str(distribution.locate_file(file))))
            if os.access(path, os.X_OK):
                found[file.name] = path
    missing = [name for name in PLUGINS if name not in found]
    if missing:
        raise CtlError(
            f"this installation has no executable {' or '.join(missing)} launcher: reinstall cnipam with pip"
        )
    return found


def _plan(link: str, target: str, force: bool) -> str:
    """What to do with `link`: "unchanged", "create" or "replace"; CtlError when it must stay."""
    try:
        current = os.readlink(link)
    except FileNotFoundError:
        return "create"
    except OSError:  # EINVAL: not a link (a file, a folder)
        if os.path.isdir(link):
            raise CtlError(f"{link} is a folder: remove it first") from None
        if os.path.exists(link) and os.path.samefile(link, target):
            return "unchanged"  # the bin folder is this installation's own
        if not force:
            raise CtlError(f"{link} is another file (not a link to {target}): pass --force to replace it") from None
        return "replace"
    resolved = os.path.normpath(os.path.join(os.path.dirname(link), current))
    if resolved == target or (os.path.exists(link) and os.path.samefile(link, target)):
        return "unchanged"
    if os.path.exists(link) and not force:
        raise CtlError(f"{link} links to {current}, not to {target}: pass --force to replace it")
    return "replace"  # forced, or a stale link whose target is gone


def _link(link: str, target: str) -> None:
    temporary = os.path.join(os.path.dirname(link), f".{os.path.basename(link)}.cnipam-{os.getpid()}")
    try:
        os.symlink(target, temporary)
        os.replace(temporary, link)
    except OSError as err:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise CtlError(f"cannot link {link}: {err.strerror}") from None


@click.command("install-plugin")
@click.argument("names", nargs=-1, type=click.Choice(PLUGINS))
@click.option(
    "--bin-dir",
    default=DEFAULT_BIN_DIR,
    show_default=True,
    metavar="DIR",
    help="the CNI bin folder (a runtime's CNI_PATH)",
)
@click.option("--force", is_flag=True, help="replace a file of the same name that is not a link to this installation")
def install_plugin(names: tuple[str, ...], bin_dir: str, force: bool) -> None:
    """Link this installation's plugin executables into a CNI bin folder.

    NAMES: cnipam, ecs-ipam (default: both). Idempotent; the folder is created if missing."""
    targets = launchers()
    folder = os.path.abspath(bin_dir)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise CtlError(f"{folder} is not a folder")
    chosen = [name for name in PLUGINS if name in (names or PLUGINS)]
    plans = {
        name: _plan(os.path.join(folder, name), targets[name], force) for name in chosen
    }  # every check before any change
    try:
        os.makedirs(folder, mode=0o755, exist_ok=True)
    except OSError as err:
        raise CtlError(f"cannot create {folder}: {err.strerror}") from None
    for name, plan in plans.items():
        link = os.path.join(folder, name)
        if plan != "unchanged":
            _link(link, targets[name])
        print_lines([f"{DONE[plan]} {link} -> {targets[name]}"])
