"""`gc`: garbage collection by hand, for runtimes that never send CNI's GC, and the
reboot repair by hand.

With `--valid`, the list has the shape libcni sends (`cni.dev/valid-attachments`), so an
operator can build it from `crictl ps` or `docker ps`. A list missing one running
container would free that container's address, so the store's collector rules apply
(core.collector): an owner is released only when a run at least `--grace` after the run
that first saw it leaked still sees it leaked, each owner's leases all or none. The
first `--apply` run records what it saw; the dry run shows what a run would release now
and what it would only record, unless the store changes in between. On etcd only the
store's host's leases are judged: the list is one host's.

With `--previous-boots`, the leases this host made in earlier boots (core.reboot): the
plugin releases them by itself on the first call after a reboot, so this is for looking
at them, or for a store the plugin has not written since.
"""

from __future__ import annotations

import click

from ..boot_id import current_boot
from ..core.durations import parse_go_duration
from ..core.leases import DOCKER_NETWORK, Lease
from ..store.lease_query import LeaseQuery
from .failures import BadInput
from .json_files import load_json_file
from .lease_json import lease_view
from .options import json_option, store_options
from .output import emit_json, print_leases
from .session import Session

DEFAULT_GRACE = "10m"


@click.command()
@click.option("--valid", "valid_path", metavar="FILE", help='JSON list of {"containerID", "ifname"} still in use')
@click.option("--network", help="the network whose leases are collected (with --valid)")
@click.option(
    "--grace",
    default=DEFAULT_GRACE,
    show_default=True,
    metavar="DURATION",
    help="how far apart two runs must see an owner leaked",
)
@click.option("--previous-boots", is_flag=True, help="instead: this host's leases of earlier boots")
@click.option("--apply", is_flag=True, help="release them (default: only list what would be released)")
@json_option
@store_options
@click.pass_obj
def gc(
    session: Session,
    valid_path: str | None,
    network: str | None,
    grace: str,
    previous_boots: bool,
    apply: bool,
    as_json: bool,
) -> None:
    """Release the leases of containers that are gone.

    With --valid FILE --network N: the owners of N none of whose (containerID, ifname) is
    in FILE, once two runs at least --grace apart saw them so. With --previous-boots: this
    host's leases of earlier boots. Lists them only, unless --apply."""
    if previous_boots:
        if valid_path is not None or network is not None:
            raise click.UsageError("--previous-boots takes neither --valid nor --network")
        _previous_boots(session, apply, as_json)
        return
    if valid_path is None or network is None:
        raise click.UsageError("give --valid FILE and --network N, or --previous-boots")
    if not network.strip():
        raise click.BadParameter("an empty network name matches nothing", param_hint="--network")
    if network.startswith(DOCKER_NETWORK):
        raise BadInput(f"{network} is a Docker pool's: dockerd releases its addresses itself (docker rm, network rm)")
    try:
        seconds = parse_go_duration(grace)
    except ValueError:
        raise BadInput(f"--grace {grace!r} is not a duration such as 10m or 0") from None
    if seconds < 0:
        raise BadInput(f"--grace {grace!r} is negative")
    valid = read_valid_attachments(valid_path)
    with session.existing() as store:
        known = next(store.scan_leases(LeaseQuery(network=network)), None) is not None
        collection = store.collect_garbage(network, valid, seconds, apply)
    chosen, recorded = collection.released, collection.sightings
    chosen.sort(key=lambda lease: (lease.family, lease.address))
    if as_json:
        waiting = {owner: round(at, 3) for owner, at in recorded.items()}
        emit_json(
            {
                "network": network,
                "applied": apply,
                "leases": [lease_view(lease) for lease in chosen],
                "waiting": waiting,
            }
        )
        return
    if not known:
        click.echo(f"cnipamctl: no lease in the store records network {network!r}: is the name right?", err=True)
    _print_outcome(chosen, apply, f"of network {network!r}")
    if recorded:
        click.echo(
            f"{len(recorded)} owner(s) seen leaked: released by a run {grace} after the first one"
            " that saw them, if still leaked"
        )


def _previous_boots(session: Session, apply: bool, as_json: bool) -> None:
    boot = current_boot(dict(session.env))
    if not boot:
        raise BadInput("this host's boot id is unknown (no /proc/sys/kernel/random/boot_id, no CNIPAM_BOOT_ID)")
    with session.existing(boot=boot) as store:
        chosen = store.release_earlier_boots() if apply else store.earlier_boot_leases()
    if as_json:
        emit_json({"boot": boot, "applied": apply, "leases": [lease_view(lease) for lease in chosen]})
        return
    _print_outcome(chosen, apply, f"of earlier boots than {boot}")


def _print_outcome(chosen: list[Lease], apply: bool, what: str) -> None:
    verb = "released" if apply else "would release"
    suffix = "" if apply else " (dry run: --apply releases them)"
    click.echo(f"{verb} {len(chosen)} lease{'s' if len(chosen) != 1 else ''} {what}{suffix}")
    if chosen:
        print_leases(chosen)


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
