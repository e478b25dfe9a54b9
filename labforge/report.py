"""The short per-host summary printed when a run ends, true in every case: refused while planning (and why),
unreachable, the layers that changed or failed (and which op), the reboot state, where CVAT answers, and
each function's state.

It goes to stderr so `pyinfra --json` output on stdout stays machine-readable.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict

from pyinfra import host, state
from pyinfra.api.exceptions import DeployError
from pyinfra.api.state import BaseStateCallback
from pyinfra.facts.files import File

REBOOT_MARKER = "/run/labforge-reboot-required"
WAITS = "waits for the reboot"  # a GPU function held while the driver awaits its reboot
_reboot_ops: dict[str, list] = defaultdict(list)
_reboot_pending: set[str] = set()
_functions: dict[str, list[tuple[str, str, object | None]]] = defaultdict(list)
_notices: dict[str, list[str]] = defaultdict(list)
_refusals: dict[str, str] = {}
_cvat: dict[str, str] = {}
_served: dict[str, str] = {}


class Refused(DeployError):
    """A host refused while planning, before anything changed. Raise it with the reason alone (one line, no host
    name, no closing sentence): it says `<host>: <reason>. Nothing was changed.` and puts the reason into the host's
    summary. `name` is for callers outside a host's context (the doctor)."""

    def __init__(self, reason: str, name: str | None = None) -> None:
        self.reason = reason.rstrip().rstrip(".")
        try:
            current = host.name
        except Exception:  # outside a host context (unit tests, the doctor): nothing to record
            current = None
        name = name or current
        super().__init__(f"{name}: {self.reason}. Nothing was changed." if name else f"{self.reason}. Nothing was changed.")
        if current is not None and name == current:
            _refusals[name] = self.reason


def cvat_at(url: str, admin: str) -> None:
    """Where CVAT answers on this host, for the summary of a run that brought the stack up."""
    _cvat[host.name] = f"CVAT at {url} (admin user '{admin}')"


def served_by(text: str) -> None:
    """Which host of a split lab serves which, for this host's summary (labforge/split.py)."""
    _served[host.name] = text


def notice(text: str) -> None:
    """A one-line notice for this host's summary (e.g. an end-of-life driver branch, a kept newer Docker)."""
    if text not in _notices[host.name]:
        _notices[host.name].append(text)


def reboot_required_if(*ops) -> None:
    """Remember ops whose change means this host must be rebooted (driver installs, nouveau blacklist)."""
    _reboot_ops[host.name].extend(ops)


def function_state(path: str, state: str, op=None) -> None:
    """A function's state for the summary; with an op, the state holds only once that op succeeded."""
    _functions[host.name].append((path, state, op))


def driver_awaits_reboot() -> bool:
    """While planning: the NVIDIA driver of this host will not be loaded during this run's later layers, because an
    earlier run installed it and the host has not rebooted since, or this run installs it without rebooting."""
    if host.name in _reboot_pending:
        return True
    if host.data.get("reboot_after_driver"):
        return False
    return any(m._maybe_is_change for m in _reboot_ops.get(host.name, []))


def note_pending_reboot() -> None:
    """Read at plan time: a driver installed by an earlier run is still waiting for its reboot."""
    if host.get_fact(File, path=REBOOT_MARKER):
        _reboot_pending.add(host.name)


def layer_of(op_names: set[str]) -> str:
    name = sorted(op_names)[0] if op_names else "?"
    return name.split(" | ", 1)[0] if " | " in name else "(top level)"


def last_error_line(meta) -> str:
    """The last non-empty line an op printed on stderr (pyinfra keeps it for failed ops too), or ''."""
    try:
        lines = [line.strip() for line in meta.stderr_lines if line.strip()]
    except (AssertionError, AttributeError):
        return ""
    return lines[-1] if lines else ""


def summarise(st, h) -> str:
    """One line: layers with changes (or planned changes on --dry), failed ops, reboot state."""
    changed: list[str] = []
    failed: list[str] = []
    failed_ops: list[str] = []
    why = ""  # the first failed op's last line on stderr: what went wrong, in the summary's one line
    for op_hash in st.get_op_order():
        op = st.ops[h].get(op_hash)
        if op is None:
            continue
        meta = op.operation_meta
        layer = layer_of(st.op_meta[op_hash].names)
        if meta.is_complete():
            if not meta.did_succeed(_raise_if_not_complete=False):
                failed.append(layer)
                failed_ops.append(sorted(st.op_meta[op_hash].names)[0].split(" | ", 1)[-1])
                why = why or last_error_line(meta)
            elif meta.did_change() and layer not in changed:
                changed.append(layer)
        elif meta._maybe_is_change and not op.global_arguments.get("_if") and layer not in changed:
            changed.append(layer)  # planned for sure; `_if` ops only follow another op's change
    executed = any(op.operation_meta.is_complete() for op in st.ops[h].values())
    if h.name in _refusals:
        return f"[labforge] {h.name}: refused: {_refusals[h.name]}; nothing was changed"
    if not executed and h in st.failed_hosts:
        return f"[labforge] {h.name}: FAILED while planning (the error is above); nothing was changed"
    verb = "changed" if executed else "would change (plan)"
    parts = [f"{verb}: {', '.join(changed) if changed else 'nothing'}"]
    if failed:
        parts.append(f"FAILED in: {', '.join(dict.fromkeys(failed))} ({'; '.join(failed_ops)})")
    reboot_ops = _reboot_ops.get(h.name, [])
    if any(m.is_complete() and m.did_change() for m in reboot_ops):
        parts.append("REBOOT REQUIRED (NVIDIA driver installed; reboot_after_driver is False)")
    elif h.name in _reboot_pending:
        parts.append("REBOOT REQUIRED (NVIDIA driver installed by an earlier run; not rebooted since)")
    elif any(not m.is_complete() and m._maybe_is_change for m in reboot_ops):
        parts.append("reboot will be required after the driver install")
    else:
        parts.append("no reboot needed")
    for path, status, op in _functions.get(h.name, []):
        if op is not None and not op.is_complete():
            status = "deploy planned" if not executed else "not deployed (run stopped)"
        elif op is not None and not op.did_succeed(_raise_if_not_complete=False):
            status = "DEPLOY FAILED"
        elif op is not None and any(WAITS in line for line in op.stdout_lines):
            status = f"{WAITS} (NVIDIA driver not loaded yet)"
        parts.append(f"function {path}: {status}")
    if executed and not failed and h.name in _cvat:
        parts.append(_cvat[h.name])
    if h.name in _served:
        parts.append(_served[h.name])
    parts.extend(f"notice: {text}" for text in _notices.get(h.name, []))
    if why:  # last, whole, as the failing op printed it: the line's end is the reason
        parts.append(f"why: {why}")
    return f"[labforge] {h.name}: " + "; ".join(parts)


class SummaryCallback(BaseStateCallback):
    @staticmethod
    def host_connect_error(state, host, error):
        print(f"[labforge] {host.name}: unreachable: {error}; nothing was changed", file=sys.stderr, flush=True)

    @staticmethod
    def host_disconnect(state, host):
        try:
            print(summarise(state, host), file=sys.stderr, flush=True)
        except Exception as exc:  # a summary must never turn a good run into a failure
            print(f"[labforge] {host.name}: summary unavailable ({exc})", file=sys.stderr)


def needs_a_terminal(argv: list[str], yes: bool, stdin_is_tty: bool) -> bool:
    """pyinfra without -y asks for confirmation with input() (pyinfra_cli/cli.py _do_confirm), which dies with
    an EOFError traceback when there is no terminal; --dry and --json never ask."""
    return not yes and not stdin_is_tty and not {"--dry", "--json"} & set(argv)


def install() -> None:
    """Register the summary once per run, and stop at once, with one line, a run that would ask with no terminal.

    Called from inventory.py while pyinfra loads it: the state is not initialised yet then (State.init, which
    pyinfra_cli calls after loading the inventory and before connecting, creates the callback list), so the
    summary is registered right after init, in time to report hosts that cannot be reached. Called again from
    preflight, for `pyinfra @local deploy.py`, which loads no inventory.py.
    """
    if needs_a_terminal(sys.argv, yes=not state.check_for_changes, stdin_is_tty=os.isatty(0)):
        print("labforge: pyinfra would ask for confirmation, but there is no terminal to answer it: add -y to apply "
              "the changes, or --dry to only show them", file=sys.stderr, flush=True)
        raise SystemExit(2)
    if hasattr(state, "callback_handlers"):
        if not any(isinstance(cb, SummaryCallback) for cb in state.callback_handlers):
            state.add_callback_handler(SummaryCallback())
        return
    init = state.init

    def init_then_register(*args, **kwargs):
        init(*args, **kwargs)
        state.add_callback_handler(SummaryCallback())

    state.init = init_then_register
