"""labforge/compat.py: the compatibility table of the pinned stack (CVAT -> Nuclio dashboard -> Docker API)."""

from __future__ import annotations

import pytest

from labforge import compat
from labforge.groupdata import load

DATA = {**load("gpu_servers"), "cvat_version": "v2.51.0"}  # a lab on the oldest row: the oldest Docker API



# --- the compatibility table -----------------------------------------------------------------------------


def with_(**changes):
    return {**DATA, **changes}


@pytest.mark.parametrize(("release", "dashboard", "api"), [("v2.51.0", "1.13.0", "1.42"), ("v2.73.0", "1.16.3", "1.44")])
def test_every_row_is_compatible_with_the_pinned_engine(release, dashboard, api):
    stack = compat.check(with_(cvat_version=release), compat.upstream_version(DATA["docker_package_versions"]["docker-ce"]))
    assert (stack.cvat, stack.dashboard, stack.docker_api) == (release, dashboard, api)


def test_a_cvat_release_outside_the_table_is_refused():
    with pytest.raises(compat.Incompatible, match=r"CVAT v2\.52\.0 is not in cvat_stack_compat"):
        compat.stack(with_(cvat_version="v2.52.0"))


def test_nuctl_must_match_the_dashboard_of_the_table():
    with pytest.raises(compat.Incompatible, match=r"nuctl 1\.15\.9 does not match CVAT v2\.51\.0's Nuclio dashboard 1\.13\.0"):
        compat.stack(with_(nuctl_version="1.15.9"))


def test_docker_29_needs_the_min_api_setting_and_28_does_not():
    stack = compat.stack(DATA)
    assert compat.min_api_setting(DATA, (28, 5, 2), stack) is None
    assert compat.min_api_setting(DATA, (29, 1, 3), stack) == "1.42"


def test_an_unknown_docker_major_is_refused():
    with pytest.raises(compat.Incompatible, match=r"Docker Engine 30\.0\.1 is not in docker_default_min_api"):
        compat.check(DATA, (30, 0, 1))


def test_an_old_engine_that_refuses_the_stack_cannot_be_configured():
    data = with_(docker_default_min_api={"28": "1.44"})
    with pytest.raises(compat.Incompatible, match="has no min-api-version setting"):
        compat.min_api_setting(data, (28, 5, 2), compat.stack(data))


@pytest.mark.parametrize(("dpkg", "upstream"), [("5:28.5.2-1~ubuntu.24.04~noble", (28, 5, 2)),
                                                 ("1.7.29-1~debian.12~bookworm", (1, 7, 29)),
                                                 ("5:29.1.3-1", (29, 1, 3))])
def test_upstream_version(dpkg, upstream):
    assert compat.upstream_version(dpkg) == upstream


def test_docker_versions_per_distro_are_exact_dpkg_strings():
    versions = DATA["docker_package_versions"]
    assert compat.docker_dpkg_versions(versions, "ubuntu", "24.04", "noble")["docker-ce"] == "5:28.5.2-1~ubuntu.24.04~noble"
    assert compat.docker_dpkg_versions(versions, "ubuntu", "22.04", "jammy")["containerd.io"] == "1.7.29-1~ubuntu.22.04~jammy"
    assert compat.docker_dpkg_versions(versions, "debian", "12", "bookworm")["docker-compose-plugin"] == \
        "2.40.3-1~debian.12~bookworm"
    assert set(versions) == {"docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin", "docker-compose-plugin"}




def test_the_release_at_head_prefers_the_tables_tag_then_a_v_tag():
    assert compat.release_at_head(None) is None and compat.release_at_head([]) is None
    assert compat.release_at_head(["latest", "v2.51.0"]) == "v2.51.0"
    assert compat.release_at_head(["v2.51.0", "v2.73.0"], {"v2.73.0": {}}) == "v2.73.0"
    assert compat.release_at_head(["nightly"]) == "nightly"
