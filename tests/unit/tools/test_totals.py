"""The --json idempotency checker shared by the lab tests and the Vagrant CI."""

import json

import pytest

from labforge.tools import totals


def pyinfra_output(ops: list[tuple[str, list, list, list]], failed=()) -> str:
    """stdout as `pyinfra -y --json` prints it: log noise may precede the one-line JSON document."""
    operations = [{"op_hash": str(i), "name": n, "names": [n], "args": [], "hosts": 1, "success": s, "error": e,
                   "no_change": nc} for i, (n, s, e, nc) in enumerate(ops)]
    result = {"operations": operations, "failed_hosts": list(failed), "totals": {
        "hosts": 1, "success": sum(len(o["success"]) for o in operations), "error": sum(len(o["error"]) for o in operations),
        "no_change": sum(len(o["no_change"]) for o in operations)}}
    return "--> Loading config...\n" + json.dumps({"plan": [], "results": result}) + "\n"


def test_idempotent_run_passes(capsys):
    out = pyinfra_output([("Base | apt", [], [], ["h1"]), ("Docker | pkgs", [], [], ["h1"])])
    t = totals.parse(out)
    assert (t.operations, t.changed, t.errors) == (2, 0, 0)
    assert totals.problems(t, expect_no_change=True) == []


def test_changed_op_fails_no_change_check_and_is_named():
    t = totals.parse(pyinfra_output([("Docker | pkgs", ["h1"], [], []), ("Base | apt", [], [], ["h1"])]))
    (problem,) = totals.problems(t, expect_no_change=True)
    assert "1 operations changed" in problem and "Docker | pkgs on h1" in problem
    assert totals.problems(t, expect_no_change=False) == []


def test_errors_always_fail():
    t = totals.parse(pyinfra_output([("Nuclio | nuctl", [], ["h1"], [])], failed=["h1"]))
    assert "1 operation errors; failed hosts: h1" in totals.problems(t, expect_no_change=False)[0]


def test_dry_run_document_is_rejected():
    with pytest.raises(ValueError, match="--dry"):
        totals.parse(json.dumps({"plan": [], "results": None}))


def test_cli_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(pyinfra_output([("Base | apt", [], [], ["h1"])]))
    bad = tmp_path / "bad.json"
    bad.write_text(pyinfra_output([("Base | apt", ["h1"], [], [])]))
    assert totals.main([str(good), "--no-change"]) == 0
    assert "operations=1 changed=0 no_change=1 errors=0" in capsys.readouterr().out
    assert totals.main([str(bad), "--no-change"]) == 1
    (tmp_path / "junk.json").write_text("no json here")
    assert totals.main([str(tmp_path / "junk.json")]) == 2
