"""Whether an operator's release could take an address from a holder that still runs.

`cnipamctl release` frees whatever it is named, and a freed address goes to the next
container that asks: if its holder still runs, two containers share it, which is worse
than any leak (issue 20: a running Docker container's address was released without a
word, and `docker run --ip` then gave it to a second container). So a release goes ahead
by itself only for leases whose holder is provably gone, and for the others the operator
must say so (`--force`), told who holds each and why nothing proves it gone.

Provably gone, from where cnipamctl stands, is only a CNI lease this host made in an
earlier boot (core.reboot: no container outlives the kernel). Everything else may be live:
a CNI lease of this boot, or one that records no boot (made before cnipam recorded boots,
migrated), or another host's (etcd); a Docker pool's address, whose holder dockerd frees
itself with the container or network (Docker networks outlive a reboot); an anonymous
lease (the ecs dialect without an id), which records no holder at all. A network
namespace that is missing is no proof: the runtime may pass a path of another mount
namespace (the ECS agent runs in a container), so the edge only mentions what it sees.
"""

from __future__ import annotations

from .leases import LEASE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .leases import Lease


def release_doubt(lease: Lease, boot: str, ended: bool) -> str | None:
    """Why releasing `lease` could take a live holder's address, or None when its holder
    is provably gone. `boot`: this host's boot ("" when unknown); `ended`: the store listed
    the lease among this host's earlier boots' leases (Store.earlier_boot_leases)."""
    if lease.kind != LEASE or ended:
        return None
    if lease.docker_pool is not None:
        return "dockerd frees it with its container or network (docker rm, docker network rm)"
    if lease.handle is None:
        return "it records no holder"
    if not lease.boot:
        return "it records no boot, so no reboot is known to have ended it"
    if not boot:
        return "this host's boot is unknown, so no reboot is known to have ended it"
    if lease.boot == boot:
        return "it was made in this boot"
    return "another host made it: its reboots are not this host's to judge"
