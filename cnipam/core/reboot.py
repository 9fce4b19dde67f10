"""Which leases a reboot ended, and why the plugin itself repairs them.

After a reboot no container of an earlier boot exists any more: its network namespace
died with the kernel. Yet host-local's files, ecs-ipam's boltdb and cnipam's store live
on persistent disk, so their leases outlive it (containernetworking/plugins #252, #332,
#697: "remove the lease folder at boot"; amazon-ecs-agent #3562: drain the instance and
flush the store by hand), and libcni's result cache survives too, so a reconciler
comparing leases with it sees nothing wrong. So every CNI lease records the kernel's
boot id (`/proc/sys/kernel/random/boot_id`, a random UUID the kernel draws at each boot).

The repair runs inside the store, in the plugin's own calls: the store records the boot
whose repair is complete (per host on etcd), and every write compares that one string
with the caller's boot. While they differ, each write first releases at most
`REPAIR_CHUNK` leases this host's CNI attachments made in another boot (etcd: a few in
an ADD's own Txn, one Txn's worth before other calls), and records the boot once none is
left. So however many leases a host had, the
first call after a reboot pays for a chunk, not for all of them (bench/reboot.py), and
what the rules below need is released at once, in the call that needs it:

* an ADD for an attachment whose leases an earlier boot made releases those first, and
  the attachment takes its addresses again;
* an ADD that finds no free address in its pool releases the earlier boots' leases in
  that pool, so a pool full before the reboot serves a new container at once;
* STATUS does not call such a pool exhausted.

Nothing has to run at boot (a unit or tmpfiles.d rule that operators forget, that runs
before the store's disk is mounted, or that races the first container), no daemon is
needed (cnipamd finishes the repair at its start), every step is one transaction, so a
crash leaves the rest to the next call. Leases that record no boot are never touched:
gateway reservations, Docker's addresses (Docker networks outlive a reboot: the driver
records no boot), leases migrated from another tool or made before cnipam recorded boots.

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

REPAIR_CHUNK = 64  # earlier boots' leases a write releases at most, besides those its call needs


def ended_by_reboot(lease: Lease, boot: str) -> bool:
    """A CNI attachment's lease made in a boot other than `boot`, this host's current one
    ("" when unknown: then nothing is ended)."""
    return bool(boot) and lease.kind == LEASE and bool(lease.boot) and lease.boot != boot


def kept_for(lease: Lease) -> tuple[str, str] | None:
    """The (handle, slot) a repaired lease's address is kept for: the attachment that may
    come back for it (an anonymous lease has nobody to come back)."""
    return (lease.handle, lease.slot) if lease.handle is not None else None
