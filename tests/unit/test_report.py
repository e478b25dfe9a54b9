"""labforge/report.py: the summary's layer names, and one way to refuse."""

from labforge.report import Refused, last_error_line, layer_of


def test_summary_groups_ops_by_layer():
    assert layer_of({"NVIDIA driver | Hold x"}) == "NVIDIA driver"
    assert layer_of({"Some op"}) == "(top level)"



def test_refused_says_the_host_and_nothing_was_changed_itself():
    assert str(Refused("a reason.", "lab1")) == "lab1: a reason. Nothing was changed."
    assert Refused("a reason", "lab1").reason == "a reason"
    assert str(Refused("no host here")) == "no host here. Nothing was changed."


def test_a_failed_ops_last_stderr_line_is_the_summarys_why():
    """pyinfra keeps a failed op's output (OperationMeta.stderr_lines): its last line says what went wrong."""
    from types import SimpleNamespace

    from pyinfra.api.command import StringCommand
    from pyinfra.api.operation import OperationMeta
    from pyinfra.connectors.util import CommandOutput, OutputLine

    meta = OperationMeta(hash="x", is_change=True)
    output = CommandOutput([OutputLine("stderr", "Job for labforge-firewall.service failed."),
                            OutputLine("stderr", "labforge firewall: ip6tables-restore: line 3 failed"), OutputLine("stderr", "")])
    meta.set_complete(False, [StringCommand("systemctl restart labforge-firewall.service")], output)
    assert last_error_line(meta) == "labforge firewall: ip6tables-restore: line 3 failed"
    assert last_error_line(SimpleNamespace()) == ""
