"""`gc`: CNI 1.1's GC by hand, for runtimes that never send it.

The valid list has the shape libcni sends (`cni.dev/valid-attachments`), so an operator
can build it from `crictl ps` or `docker ps`. A dry run comes first by default because a
list missing one running container would free that container's address; the rule is
the store's own (Store.collect_garbage), so the dry run shows exactly what `--apply`
releases, unless the store changes in between.
"""

from __future__ import annotations

import click

from ..core.leases import LEASE, Lease
from .failures import BadInput
from .json_files import load_json_file
from .lease_json import lease_view
from .options import db_option, json_option
from .output import emit_json, lease_listing
from .session import Session


@click.command()
@click.option(
    "--valid", "valid_path", metavar="FILE", required=True, help='JSON list of {"containerID", "ifname"} still in use'
)
@click.option("--network", required=True, help="the network whose leases are collected")
@click.option("--apply", is_flag=True, help="release them (default: only list what would be released)")
@json_option
@db_option
@click.pass_obj
def gc(session: Session, valid_path: str, network: str, apply: bool, as_json: bool) -> None:
    """Release the leases of containers that are gone.

    The leases of --network whose (containerID, ifname) is not in the --valid list.
    Lists them only, unless --apply."""
    valid = read_valid_attachments(valid_path)
    with session.existing() as store:
        chosen = store.collect_garbage(network, valid) if apply else garbage(store.leases(network), network, valid)
    chosen.sort(key=lambda lease: (lease.family, lease.address))
    if as_json:
        emit_json({"network": network, "applied": apply, "leases": [lease_view(lease) for lease in chosen]})
        return
    verb = "released" if apply else "would release"
    suffix = "" if apply else " (dry run: --apply releases them)"
    click.echo(f"{verb} {len(chosen)} lease{'s' if len(chosen) != 1 else ''} of network {network!r}{suffix}")
    if chosen:
        lease_listing(chosen).print()


def garbage(leases: list[Lease], network: str, valid: set[tuple[str, str]]) -> list[Lease]:
    """Store.collect_garbage's rule: leases (not reservations) of the network that record a
    container whose (container, ifname) is not valid."""
    return [
        lease
        for lease in leases
        if lease.network == network
        and lease.kind == LEASE
        and lease.container_id
        and (lease.container_id, lease.ifname) not in valid
    ]


def read_valid_attachments(path: str) -> set[tuple[str, str]]:
    listed = load_json_file(path, "valid list")
    if not isinstance(listed, list):
        raise BadInput(f'valid list {path}: expected a JSON list of {{"containerID": string, "ifname": string}}')
    valid = set()
    for index, item in enumerate(listed):
        if not (
            isinstance(item, dict) and isinstance(item.get("containerID"), str) and isinstance(item.get("ifname"), str)
        ):
            raise BadInput(f'valid list {path}[{index}]: expected {{"containerID": string, "ifname": string}}')
        valid.add((item["containerID"], item["ifname"]))
    return valid
