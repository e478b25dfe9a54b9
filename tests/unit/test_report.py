"""labforge/report.py: the summary's layer names, and one way to refuse."""

from labforge.report import Refused, layer_of


def test_summary_groups_ops_by_layer():
    assert layer_of({"NVIDIA driver | Hold x"}) == "NVIDIA driver"
    assert layer_of({"Some op"}) == "(top level)"



def test_refused_says_the_host_and_nothing_was_changed_itself():
    assert str(Refused("a reason.", "lab1")) == "lab1: a reason. Nothing was changed."
    assert Refused("a reason", "lab1").reason == "a reason"
    assert str(Refused("no host here")) == "no host here. Nothing was changed."
