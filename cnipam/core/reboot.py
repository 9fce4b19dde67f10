"""Which leases a reboot ended, and why the plugin itself repairs them.

After a reboot no container of an earlier boot exists any more: its network namespace
died with the kernel. Yet host-local's files, ecs-ipam's boltdb and cnipam's store live
on persistent disk, so their leases outlive it (containernetworking/plugins #252, #332,
#697: "remove the lease folder at boot"; amazon-ecs-agent #3562: drain the instance and
flush the store by hand), and libcni's result cache survives too, so a reconciler
comparing leases with it sees nothing wrong. So every CNI lease records the kernel's
boot id (`/proc/sys/kernel/random/boot_id`, a random UUID the kernel draws at each boot).

The repair runs inside the store, on the first write of the first call after a reboot:
the store records the boot it last repaired for (per host on etcd), every write compares
that one string with the caller's boot, and the first one that differs releases, in the
same transaction on SQLite (in batches that never split an owner on etcd, the record
written last), every lease this host's CNI attachments made in another boot. Nothing has
to run at boot (a unit or tmpfiles.d rule that operators forget, that runs before the
store's disk is mounted, or that races the first container), no daemon is needed, a
crash leaves the repair to the next call, and the cost is paid once per boot, not per
call. Leases that record no boot are never touched: gateway reservations, Docker's
addresses (Docker networks outlive a reboot: the driver records no boot), leases
migrated from another tool or made before cnipam recorded boots.

The addresses freed this way stay reserved for their attachments (core.reuse,
RETURN_HOLD): a runtime that starts the same container again after the reboot (same
network, container id and interface) gets its old address back, as it would have
without the reboot, unless a pool with nothing else free had to give it away.
"""

from __future__ import annotations

from .leases import LEASE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .leases import Lease


def ended_by_reboot(lease: Lease, boot: str) -> bool:
    """A CNI attachment's lease made in a boot other than `boot`, this host's current one
    ("" when unknown: then nothing is ended)."""
    return bool(boot) and lease.kind == LEASE and bool(lease.boot) and lease.boot != boot


def kept_for(lease: Lease) -> tuple[str, str] | None:
    """The (handle, slot) a repaired lease's address is kept for: the attachment that may
    come back for it (an anonymous lease has nobody to come back)."""
    return (lease.handle, lease.slot) if lease.handle is not None else None
