"""labforge/split.py through the hosts file loader: the roles of a split lab and the files that make no lab."""

from __future__ import annotations

import pytest
import yaml

from labforge import split
from labforge.hostsfile import HostsFileError, load

CVAT = {"host": "192.0.2.10", "name": "cvat1", "data": {"inference_host": "gpu1"}}
GPU = {"host": "192.0.2.20", "name": "gpu1", "data": {"lab_role": "inference"}}


def hosts_file(tmp_path, **groups):
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(groups))
    return path


def test_an_all_in_one_file_keeps_its_meaning(tmp_path):
    groups = load(hosts_file(tmp_path, gpu_servers=["192.0.2.5"], cpu_servers=["192.0.2.6"]))
    for entries in groups.values():
        for _, data in entries:
            assert split.role(data) == "all" and "inference_address" not in data and "cvat_address" not in data


def test_a_split_lab_gives_each_side_the_others_address(tmp_path):
    groups = load(hosts_file(tmp_path, cpu_servers=[CVAT], gpu_servers=[GPU]))
    (_, cvat), = groups["cpu_servers"]
    (_, gpu), = groups["gpu_servers"]
    assert (split.role(cvat), cvat["inference_address"]) == ("cvat", "192.0.2.20")
    assert (split.role(gpu), gpu["cvat_address"]) == ("inference", "192.0.2.10")


@pytest.mark.parametrize(("groups", "line"), [
    ({"gpu_servers": [GPU], "cpu_servers": ["192.0.2.6"]},
     "gpu1 is an inference host (lab_role: inference) but no CVAT host names it (inference_host: gpu1)"),
    ({"gpu_servers": [GPU], "cpu_servers": [CVAT, {**CVAT, "host": "192.0.2.11", "name": "cvat2"}]},
     "gpu1 would serve two CVAT hosts (cvat1 and cvat2)"),
    ({"cpu_servers": [CVAT]}, "cvat1: inference_host 'gpu1' is not a host of this file"),
    ({"cpu_servers": [CVAT], "gpu_servers": [{**GPU, "data": {}}]},
     "cvat1: inference_host 'gpu1' is not an inference host; give it data 'lab_role: inference'"),
    ({"cpu_servers": [{**CVAT, "data": {"inference_host": ["gpu1", "gpu2"]}}], "gpu_servers": [GPU]},
     "cvat1: inference_host names 2 hosts; CVAT talks to one Nuclio endpoint, so functions on several inference hosts "
     "need Nuclio on Kubernetes (docs/kubernetes.md)"),
    ({"cpu_servers": [CVAT], "gpu_servers": [{**GPU, "data": {"lab_role": "nuclio"}}]},
     "gpu1: lab_role must be one of all, inference, not 'nuclio'"),
    ({"cpu_servers": [CVAT], "gpu_servers": [{**GPU, "data": {"lab_role": "inference", "inference_host": "cvat1"}}]},
     "gpu1: an inference host (lab_role: inference) names no inference_host of its own"),
    ({"cpu_servers": [{**CVAT, "data": {"inference_host": "gpu1", "inference_address": "10.0.0.1"}}], "gpu_servers": [GPU]},
     "cvat1: inference_address is set by labforge from inference_host; remove it"),
])
def test_a_hosts_file_that_makes_no_lab_is_refused_with_one_line(tmp_path, groups, line):
    with pytest.raises(HostsFileError) as refused:
        load(hosts_file(tmp_path, **groups))
    assert line in str(refused.value) and "\n" not in str(refused.value)


def test_a_gpu_only_function_on_a_cpu_inference_host_is_refused(tmp_path):
    (tmp_path / "files/nuclio/big").mkdir(parents=True)
    (tmp_path / "files/nuclio/big/function-gpu.yaml").write_text("metadata: {name: big}\n")
    groups = {"cpu_servers": [("cvat1", {"ssh_hostname": "192.0.2.10", "inference_host": "gpu1"}),
                              ("gpu1", {"ssh_hostname": "192.0.2.20", "lab_role": "inference"})], "gpu_servers": []}
    with pytest.raises(split.SplitLabError, match="gpu1 is a CPU inference host but files/nuclio/big runs on a GPU only"):
        split.check(groups, lambda group, data: ["files/nuclio/big"], repo=tmp_path)
    split.check(groups, lambda group, data: ["serverless/openvino/dextr"], repo=tmp_path)  # CPU functions are fine


def test_lab_address_is_what_the_other_side_reaches_and_the_release_is_the_cvat_hosts(tmp_path):
    cvat1 = {**CVAT, "data": {**CVAT["data"], "lab_address": "10.9.0.1", "cvat_version": "v2.73.0"}}
    gpu1 = {**GPU, "data": {**GPU["data"], "lab_address": "10.9.0.2"}}
    groups = load(hosts_file(tmp_path, cpu_servers=[cvat1], gpu_servers=[gpu1]))
    (_, cvat), = groups["cpu_servers"]
    (_, gpu), = groups["gpu_servers"]
    assert (cvat["inference_address"], gpu["cvat_address"], gpu["inference_for"]) == ("10.9.0.2", "10.9.0.1", "cvat1")
    assert gpu["cvat_version"] == "v2.73.0"
    assert (split.partner(cvat), split.partner(gpu), split.partner({"ssh_hostname": "192.0.2.5"})) == ("gpu1", "cvat1", None)
    assert (split.local_nuclio(cvat), split.local_nuclio(gpu), split.local_nuclio({})) == (False, False, True)


@pytest.mark.parametrize(("cvat_data", "gpu_data", "line"), [
    ({"cvat_version": "v2.73.0"}, {"cvat_version": "v2.51.0"},
     "gpu1 has cvat_version v2.51.0 but its CVAT host cvat1 has v2.73.0; an inference host runs its CVAT host's release"),
    ({"lab_address": "cvat1.example"}, {},
     "cvat1: its address 'cvat1.example' is not an IPv4 address, and gpu1's firewall lets one address reach its dashboard"),
    ({}, {"inference_for": "cvat9"}, "gpu1: inference_for is set by labforge from inference_host; remove it"),
])
def test_two_releases_a_cvat_host_known_by_name_only_and_derived_values_are_refused(tmp_path, cvat_data, gpu_data, line):
    cvat1 = {**CVAT, "data": {**CVAT["data"], **cvat_data}}
    gpu1 = {**GPU, "data": {**GPU["data"], **gpu_data}}
    with pytest.raises(HostsFileError) as refused:
        load(hosts_file(tmp_path, cpu_servers=[cvat1], gpu_servers=[gpu1]))
    assert line in str(refused.value) and "\n" not in str(refused.value)
