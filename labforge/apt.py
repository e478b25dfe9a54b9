"""apt on a host that other apt users share: bounded waits for apt's locks, and updates only when needed.

A fresh Ubuntu server or cloud VM runs unattended-upgrades right after its first boot and holds the
dpkg lock for minutes. Two different waits are needed (measured with apt 2.6.1, Debian 12):

- ``apt-get install``/``remove`` wait for the dpkg frontend lock when ``DPkg::Lock::Timeout`` is set
  (apt's own doc/examples/configure-index lists ``dpkg::lock::timeout "<INT>"``; the waiting came
  with apt 1.9.11, changelog "Wait for lock (Closes: #754103)"). The base layer writes it first.
- ``apt-get update`` does not: it fails at once with "Could not get lock /var/lib/apt/lists/lock. It is
  held by process N (name)" whatever that setting says. So every update here, and every dpkg or
  apt-mark call, is preceded by :func:`wait_command`, and planning waits the same way
  (:class:`AptLockHolders`).

Locks are found in /proc/locks (dpkg and apt take POSIX fcntl locks), so no extra tool is needed.
"""

from __future__ import annotations

import shlex
from datetime import datetime, timezone

from pyinfra import host
from pyinfra.api import FactBase, operation
from pyinfra.facts.files import File
from pyinfra.facts.server import Date
from pyinfra.operations import server
from pyinfra.operations.util import any_changed

LOCKS = ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock")
LOCK_TIMEOUT_CONF = "/etc/apt/apt.conf.d/00labforge-lock-timeout"
UPDATE_STAMP = "/var/lib/apt/periodic/update-success-stamp"  # where pyinfra's and Ubuntu's updates leave their time
POLL_SECONDS = 2


def lock_timeout_conf(seconds: int) -> str:
    return ("# Managed by labforge: apt-get waits this long for the dpkg lock (another apt user holds it).\n"
            f'DPkg::Lock::Timeout "{seconds}";\n')


def holders_command(locks: tuple[str, ...] = LOCKS) -> str:
    """Print '<lock file> <pid> <process name>' for every held apt/dpkg lock; nothing when all are free."""
    files = " ".join(shlex.quote(f) for f in locks)
    return (
        f"for f in {files}; do [ -e \"$f\" ] || continue; ino=$(stat -c %i \"$f\"); "
        "awk -v ino=\"$ino\" '{n = split($6, a, \":\"); if (a[n] == ino) print $5}' /proc/locks 2>/dev/null | "
        "while read -r pid; do [ \"$pid\" -gt 0 ] 2>/dev/null || continue; "
        "echo \"$f $pid $(cat /proc/$pid/comm 2>/dev/null || echo '?')\"; done; done"
    )


def wait_command(timeout: int, locks: tuple[str, ...] = LOCKS) -> str:
    """Shell that waits until apt's locks are free, at most ``timeout`` seconds, else fails with one line."""
    holders = holders_command(locks)
    return (
        f"labforge_t=0; while labforge_h=$({holders}); [ -n \"$labforge_h\" ]; do "
        f"if [ \"$labforge_t\" -ge {int(timeout)} ]; then "
        "set -- $labforge_h; "
        f"echo \"labforge: apt is locked: $1 is held by process $2 ($3) for more than {int(timeout)}s "
        "(apt_lock_timeout); wait for it to finish, or stop it, then run again\" >&2; exit 1; fi; "
        f"sleep {POLL_SECONDS}; labforge_t=$((labforge_t + {POLL_SECONDS})); done"
    )


class AptLockHolders(FactBase[list[str]]):
    """Waits (at most ``timeout`` seconds, while planning) for apt's locks; what still holds one after that.

    Each entry is '<lock file> <pid> <process name>'; an empty list means apt is free now.
    """

    def command(self, timeout: int, locks: tuple[str, ...] = LOCKS) -> str:
        holders = holders_command(locks)
        return (f"labforge_t=0; while [ -n \"$({holders})\" ] && [ \"$labforge_t\" -lt {int(timeout)} ]; do "
                f"sleep {POLL_SECONDS}; labforge_t=$((labforge_t + {POLL_SECONDS})); done; {holders}; true")

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]

    @staticmethod
    def default() -> list[str]:
        return []


class AptMissing(FactBase[list[str]]):
    """Which of the given package specs ('name' or 'name=version') apt's cache cannot offer yet."""

    def command(self, specs: tuple[str, ...]) -> str:
        quoted = " ".join(shlex.quote(s) for s in specs)
        return f"for s in {quoted}; do apt-cache show \"$s\" >/dev/null 2>&1 || echo \"$s\"; done; true"

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]

    @staticmethod
    def default() -> list[str]:
        return []


DPKG_JOURNAL = "/var/lib/dpkg/updates"


class DpkgInterrupted(FactBase[bool]):
    """dpkg died mid-run (killed, power lost): its journal holds an entry, and apt refuses every install.

    apt's check is debSystem::CheckUpdates in apt-pkg/deb/debsystem.cc (Debian/apt): a file in
    /var/lib/dpkg/updates whose name is all digits makes debSystem::Lock fail with "dpkg was interrupted, you
    must manually run 'dpkg --configure -a' to correct the problem." Seen with apt 2.6.1 in the test lab
    (tests/lab/test_faults.py) after dpkg was killed while unpacking docker-ce.
    """

    def command(self) -> str:
        return f"ls -1 {DPKG_JOURNAL} 2>/dev/null | grep -qx '[0-9][0-9]*' && echo interrupted || true"

    def process(self, output: list[str]) -> bool:
        return "interrupted" in output

    @staticmethod
    def default() -> bool:
        return False


def finish_interrupted(lock_timeout: int) -> None:
    """Replay dpkg's journal (``dpkg --configure -a``) when a killed run left it dirty; nothing otherwise.

    Packages it left half-installed are not "ii" for pyinfra's DebPackages fact, so the layers install them again.
    """
    if host.get_fact(DpkgInterrupted):
        server.shell(name="dpkg was interrupted: dpkg --configure -a",
                     commands=[f"{wait_command(lock_timeout)}; DEBIAN_FRONTEND=noninteractive dpkg --configure -a "
                               "--force-confdef --force-confold"])


def missing(specs: list[str]) -> list[str]:
    """Package specs the host's apt cache lacks (so an update must come first)."""
    return host.get_fact(AptMissing, specs=tuple(specs)) if specs else []


def stale(cache_time: int | None) -> bool:
    """True when cache_time is set and the last update is older than that (pyinfra's apt.update rule)."""
    if not cache_time:
        return False
    info = host.get_fact(File, path=UPDATE_STAMP)
    if not info or not info.get("mtime"):
        return True
    # As pyinfra's apt.update: File's mtime is naive UTC, so the host's Date is taken as UTC too.
    now = datetime.fromtimestamp(host.get_fact(Date).timestamp(), timezone.utc).replace(tzinfo=None)
    return (now - info["mtime"]).total_seconds() > int(cache_time)  # --data gives a string


@operation(is_idempotent=False)
def update(lock_timeout: int):
    """``apt-get update`` after waiting for apt's locks (apt-get update itself never waits for them).

    Callers decide when it is needed (a source changed, a wanted package is missing, or the
    optional cache_time passed), so a converged host never reports it.
    """
    yield f"{wait_command(lock_timeout)}; apt-get update && touch {UPDATE_STAMP}"


def lock_timeout() -> int:
    """apt_lock_timeout, the one reader: seconds every apt/dpkg call of this host waits for apt's locks."""
    return int(host.data.get("apt_lock_timeout"))


def refresh(name: str, packages: list[str], after: list = ()) -> None:
    """One ``apt-get update``, only when needed: a package spec the layer installs is not in apt's cache
    (fresh host, new pin), a repository op in ``after`` changed, or the optional apt_cache_time passed."""
    timeout = lock_timeout()
    lacking = missing(packages)
    if lacking or stale(host.data.get("apt_cache_time")):
        why = f"{', '.join(lacking[:2])}{' ...' if len(lacking) > 2 else ''} not in apt's cache" if lacking else "apt_cache_time"
        update(name=f"apt update ({why})", lock_timeout=timeout)
    elif after:
        update(name=f"apt update after the {name} repository changed", lock_timeout=timeout, _if=any_changed(*after))
