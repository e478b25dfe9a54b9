"""Override rendering and the dashboard/nuctl check, against a CVAT-like layout built from service names."""

import subprocess

import pytest
import yaml

from labforge import compose

V251_SERVICES = ["cvat_db", "cvat_redis_inmem", "cvat_redis_ondisk", "cvat_server", "cvat_worker_utils",
                 "cvat_worker_import", "cvat_worker_export", "cvat_worker_annotation", "cvat_worker_webhooks",
                 "cvat_worker_quality_reports", "cvat_worker_chunks", "cvat_worker_consensus", "cvat_ui", "traefik"]
WANTED = ["cvat_server", "cvat_worker_import", "cvat_worker_export", "cvat_worker_annotation", "cvat_worker_chunks"]


def compose_file(services: list[str]) -> str:
    return yaml.safe_dump({"name": "cvat", "services": {s: {"image": f"cvat/{s}", "container_name": s} for s in services}})


def test_share_services_only_those_in_the_compose_file():
    assert compose.share_services(WANTED, compose_file(V251_SERVICES)) == WANTED
    older = [s for s in V251_SERVICES if s != "cvat_worker_chunks"]
    assert compose.share_services(WANTED, compose_file(older)) == WANTED[:-1]
    assert compose.share_services(WANTED, None) == WANTED


class ComposeTags(yaml.SafeLoader):
    """Compose's merge tags (!reset, !override) read as plain values, to look at the override's own structure."""


ComposeTags.add_constructor("!reset", lambda loader, node: ("!reset", loader.construct_sequence(node)))
ComposeTags.add_constructor("!override", lambda loader, node: ("!override", loader.construct_sequence(node)))


def test_override_is_valid_compose_mounting_the_share_read_only():
    doc = yaml.load(compose.render_override(WANTED, "/mnt/share", [8080]), Loader=ComposeTags)
    assert list(doc["services"]) == [*WANTED, "nuclio", compose.GUARD_SERVICE, "traefik"]
    for service in WANTED:
        assert doc["services"][service]["volumes"] == ["cvat_share:/home/django/share:ro"]
    for caller in compose.NUCLIO_CALLERS:  # CVAT reaches Nuclio through the guard only
        assert doc["services"][caller]["environment"] == {"CVAT_NUCLIO_HOST": "nuclio_guard", "CVAT_NUCLIO_PORT": "8070"}
    assert doc["services"]["nuclio"] == {"ports": ("!reset", []), "networks": ("!override", ["nuclio_guarded"])}
    guard = doc["services"][compose.GUARD_SERVICE]
    assert guard["image"] == "${LABFORGE_NUCLIO_GUARD_IMAGE:-cvat/server:v2.51.0}"
    assert guard["networks"] == ["cvat", "nuclio_guarded"] and guard["environment"]["LABFORGE_NUCLIO_UPSTREAM"] == "nuclio:8070"
    assert (guard["read_only"], guard["user"], guard["cap_drop"]) == (True, "65534:65534", ["ALL"])
    assert doc["services"]["traefik"] == {"ports": ("!override", ["8080:8080"])}
    assert doc["volumes"]["cvat_share"]["driver_opts"] == {"type": "none", "device": "/mnt/share", "o": "bind"}


def test_override_refuses_no_services():
    with pytest.raises(ValueError):
        compose.render_override([], "/mnt/share", [8080])


@pytest.mark.parametrize(("image", "nuctl", "ok"), [
    ("quay.io/nuclio/dashboard:1.13.0-amd64", "1.13.23", True),
    ("quay.io/nuclio/dashboard:1.15.9-amd64", "1.13.23", False),
    ("quay.io/nuclio/dashboard:1.13.0-arm64", "1.14.0", False),
])
def test_version_mismatch(image, nuctl, ok):
    text = yaml.safe_dump({"services": {"nuclio": {"image": image}}})
    problem = compose.version_mismatch(text, nuctl, "v2.x")
    assert (problem is None) is ok
    if not ok:
        assert f"but nuctl is {nuctl}" in problem


def test_no_dashboard_image_is_reported():
    assert "no quay.io/nuclio/dashboard image" in compose.version_mismatch("services: {}\n", "1.13.23", "v2.51.0")


@pytest.mark.parametrize(("dashboard", "services", "ok"), [
    ("1.13.0", V251_SERVICES, True),
    ("1.15.9", V251_SERVICES, False),
    ("1.13.0", [s for s in V251_SERVICES if s != "cvat_worker_chunks"], False),
])
def test_tag_checks_command_runs_against_a_real_git_tag(tmp_path, dashboard, services, ok):
    """The shell twin of version_mismatch/share_services, run with real git and sh on a tagged repo."""
    repo = tmp_path / "cvat"
    (repo / "components/serverless").mkdir(parents=True)
    (repo / "docker-compose.yml").write_text(compose_file(services))
    (repo / compose.SERVERLESS_COMPOSE).write_text(
        yaml.safe_dump({"services": {"nuclio": {"image": f"quay.io/nuclio/dashboard:{dashboard}-amd64"}}}))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    subprocess.run([*git, "tag", "v9.9.9"], check=True)
    proc = subprocess.run(["sh", "-c", compose.tag_checks_command(str(repo), "v9.9.9", "1.13.23", WANTED)],
                          capture_output=True, text=True)
    assert (proc.returncode == 0) is ok, proc.stderr
    if not ok:
        assert proc.stderr.startswith("labforge: CVAT v9.9.9")


def test_inputs_digest_changes_with_any_input():
    base = compose.inputs_digest("v2.51.0", "override", "CVAT_HOST=a\n")
    assert base == compose.inputs_digest("v2.51.0", "override", "CVAT_HOST=a\n")
    assert base != compose.inputs_digest("v2.51.0", "override", "CVAT_HOST=b\n")
    assert base != compose.inputs_digest("v2.52.0", "override", "CVAT_HOST=a\n")


def test_a_split_labs_cvat_host_gets_nuclio_settings_and_no_local_dashboard():
    env = compose.nuclio_environment("192.0.2.20")
    assert env["CVAT_NUCLIO_HOST"] == compose.GUARD_SERVICE and env["CVAT_NUCLIO_INVOKE_METHOD"] == "dashboard"
    text = compose.render_override(["cvat_worker_import"], "/srv/share", [8080], inference_address="192.0.2.20")
    doc = yaml.safe_load(text.replace("!reset", "").replace("!override", ""))
    assert "nuclio" not in doc["services"] and "networks" not in doc
    guard = doc["services"][compose.GUARD_SERVICE]
    assert guard["environment"]["LABFORGE_NUCLIO_UPSTREAM"] == "192.0.2.20:8070" and guard["networks"] == ["cvat"]
    for caller in compose.NUCLIO_CALLERS:
        assert doc["services"][caller]["environment"] == env, caller
    assert "environment" not in doc["services"]["cvat_worker_import"]
    assert compose.SERVERLESS_COMPOSE not in compose.compose_args(serverless=False)
    assert compose.SERVERLESS_COMPOSE in compose.compose_args()
