"""labforge/daemon_json.py: whether daemon.json already has the NVIDIA runtime."""

import pytest

from labforge.daemon_json import has_nvidia_runtime


@pytest.mark.parametrize(
    ("config", "expected"),
    [(None, False), ({}, False), ({"runtimes": {}}, False), ({"runtimes": {"nvidia": {}}}, True),
     ({"data-root": "/srv/docker", "runtimes": {"nvidia": {"args": []}}}, True)],
)
def test_has_nvidia_runtime(config, expected):
    assert has_nvidia_runtime(config) is expected
