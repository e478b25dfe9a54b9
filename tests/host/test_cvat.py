"""testinfra checks for the CVAT and functions layers. The live checks skip where the stack cannot run.

The exposure checks probe the host from where pytest runs (the SSH target's address): run them from a machine on
the lab's network to see what that network sees.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess

import pytest
from cryptography import x509

from labforge import compat, compose, exposure, inference, report, split, tls, upgrades
from labforge.compose import compose_args
from labforge.facts import ComposeServiceStates, CvatSuperusers, NuclioFunctions
from labforge.nuclio_functions import SLUG_LABEL, from_settings, is_current
from labforge.paths import in_repo


@pytest.fixture(scope="module")
def cvat_dir(pins, cvat_here) -> str:
    return pins["cvat_dir"]


def test_checkout_at_pinned_tag(host, pins, cvat_dir):
    assert pins["cvat_version"] in host.check_output(f"git -C {cvat_dir} tag --points-at HEAD").split()
    assert host.run(f"git -C {cvat_dir} status --porcelain --untracked-files=no").stdout.strip() == "", "CVAT's files edited"


def test_override_mounts_share_read_only(host, pins, cvat_dir):
    override = host.file(f"{cvat_dir}/{compose.OVERRIDE}")
    assert override.mode == 0o644
    text = override.content_string
    assert "cvat_share:/home/django/share:ro" in text and f"device: {pins['share_path']}" in text


def test_share_is_group_writable_never_world(host, pins, cvat_here):
    share = host.file(pins["share_path"])
    assert share.is_directory and share.group == pins["share_group"] and share.mode == 0o2775


def test_cvat_host_env_file(host, cvat_here):
    assert host.file("/etc/labforge/cvat.env").contains("^CVAT_HOST=.")


@pytest.fixture(scope="module")
def running(host, pins, cvat_dir):
    """Only where the stack is up (real servers, the Vagrant VM, a lab host converged with cvat_start)."""
    fact = ComposeServiceStates()
    states = fact.process(host.run(fact.command("cvat", cvat_dir, compose_args(split.local_nuclio(pins)))).stdout.splitlines())
    if not states:
        pytest.skip("CVAT's containers are not running here (docker compose ps has no answer)")
    return states


def test_all_cvat_containers_running(running, lab_role):
    assert {s: st for s, st in running.items() if st != "running"} == {}
    assert {"cvat_server", "cvat_ui", "traefik", *(["nuclio"] if lab_role == "all" else [])} <= set(running)


def test_share_mounted_read_only_in_each_service(host, pins, running):
    for service in compose.share_services(pins["cvat_share_services"], None):
        if service not in running:
            continue
        mounts = json.loads(host.check_output(f"docker inspect --format '{{{{json .Mounts}}}}' {service}"))
        share = [m for m in mounts if m["Destination"] == "/home/django/share"]
        assert share and share[0]["RW"] is False, service


@pytest.fixture(scope="module")
def cvat_name(host) -> str:
    return host.file("/etc/labforge/cvat.env").content_string.split("CVAT_HOST=")[1].split()[0]


def test_api_answers(host, pins, running, cvat_name):
    if pins["cvat_tls"] == "off":
        about = host.check_output(f"curl -fsS -H 'Host: {cvat_name}' http://127.0.0.1:8080/api/server/about")
    else:
        about = host.check_output(f"curl -fsS -k --resolve {cvat_name}:443:127.0.0.1 https://{cvat_name}/api/server/about")
    assert json.loads(about)["version"]


def test_cvat_server_runs_the_pinned_release(host, pins, running):
    image = host.check_output("docker inspect -f '{{.Config.Image}}' cvat_server")
    assert image.endswith(f":{pins['cvat_version']}"), image


def test_no_upgrade_left_unfinished(host, cvat_here):
    assert not host.file(upgrades.STATE).exists, f"an upgrade did not finish ({upgrades.STATE}): converge again"


def test_admin_exists(host, pins, running):
    fact = CvatSuperusers()
    manage_py = compat.stack(pins).manage_py
    assert pins["cvat_admin_user"] in (fact.process(host.run(fact.command(manage_py)).stdout.splitlines()) or [])


@pytest.fixture(scope="module")
def functions_here(host, lab_role):
    """Where the functions run: an all-in-one host or a split lab's inference host, with its dashboard up."""
    if lab_role == "cvat":
        pytest.skip("a split lab's CVAT host: its functions run on its inference host")
    if host.run("docker inspect -f '{{.State.Running}}' nuclio").stdout.strip() != "true":
        pytest.skip("no Nuclio dashboard running here (the stack is not up)")


def test_enabled_functions_ready(host, pins, functions_here, gpu_role):
    """Every enabled function is current, except a GPU function while the driver awaits its reboot: that one
    must not be deployed at all (Nuclio would start it with `--gpus all` before the driver is loaded)."""
    fact = NuclioFunctions()
    deployed = fact.process(host.run(fact.command()).stdout.splitlines())
    awaiting_reboot = gpu_role and host.file(report.REBOOT_MARKER).exists
    for path in pins["nuclio_functions"]:
        fn = from_settings(path, pins, gpu_role)
        if awaiting_reboot and host.file(f"{fn.yaml_dir}/function-gpu.yaml").exists:
            assert not any((f["labels"] or {}).get(SLUG_LABEL) == fn.slug for f in deployed), f"{path} deployed before the reboot"
            continue
        assert is_current(fn, deployed), path


def test_each_function_holds_its_own_port_below_dockers_random_ones(host, pins, functions_here, gpu_role):
    """nuclio_function_ports, published as set and outside the kernel's ephemeral range, where Docker picks the
    ports it publishes at random: after a reboot nothing else can take a function's port (labforge/function_config.py)."""
    low, _ = (int(x) for x in host.file("/proc/sys/net/ipv4/ip_local_port_range").content_string.split())
    awaiting_reboot = gpu_role and host.file(report.REBOOT_MARKER).exists
    for path in pins["nuclio_functions"]:
        fn = from_settings(path, pins, gpu_role)
        if awaiting_reboot and host.file(f"{fn.yaml_dir}/function-gpu.yaml").exists:
            continue
        names = host.check_output(f"docker ps -a --filter label={SLUG_LABEL}={fn.slug} --format '{{{{.Names}}}}'").split()
        assert len(names) == 1, (path, names)
        bound = json.loads(host.check_output(f"docker inspect {names[0]}"))[0]["HostConfig"]["PortBindings"]["8080/tcp"]
        assert {b["HostPort"] for b in bound} == {str(pins["nuclio_function_ports"][path])} and fn.port < low, (path, bound)


# --- exposure, from outside -------------------------------------------------------------------------------------


def test_nuclio_dashboard_not_published(host, pins, running, lab_role):
    """The dashboard has no authentication and holds the Docker socket: not on any host address but, when
    nuclio_dashboard_publish says so, the host's loopback. A split lab's CVAT host runs none."""
    if lab_role == "cvat":
        return  # test_a_split_labs_cvat_host_runs_no_nuclio
    bindings = json.loads(host.check_output("docker inspect nuclio"))[0]["HostConfig"].get("PortBindings") or {}
    addresses = {b.get("HostIp") for port in bindings.values() for b in port or []}
    if pins.get("nuclio_dashboard_publish") is None:
        assert bindings == {}, bindings
    else:
        assert addresses == {pins["nuclio_dashboard_publish"]}, bindings


def first_rule(host, command: str, chain: str) -> str:
    return [*host.check_output(f"{command} -w -S {chain}").splitlines(), "", ""][1]


def test_the_firewall_chains_are_first_in_both_families_and_docker_requires_them(host, running):
    """labforge's chains are the first rule of DOCKER-USER and OUTPUT (iptables and ip6tables) and of ip6tables'
    INPUT (over IPv6 only SSH and allowed CVAT); Docker does not start without them (docs/security.md)."""
    with host.sudo():
        for chain, target in exposure.jumps(4):
            assert first_rule(host, "iptables", chain) == f"-A {chain} -j {target}", chain
        if host.file("/proc/net/if_inet6").exists:
            for chain, target in exposure.jumps(6):
                assert first_rule(host, "ip6tables", chain) == f"-A {chain} -j {target}", f"ip6tables {chain}"
            assert host.check_output(f"ip6tables -w -S {exposure.INPUT6_CHAIN}").splitlines()[-1] == \
                f"-A {exposure.INPUT6_CHAIN} -p tcp -j DROP"
        requires = host.check_output("systemctl show docker.service -p Requires --value").split()
    assert exposure.FIREWALL_UNIT in requires
    assert host.run(f"systemctl is-active {exposure.FIREWALL_UNIT}").stdout.strip() == "active"


def test_cvat_reaches_nuclio_through_the_guard_only(host, pins, running, lab_role):
    """CVAT's callers name the guard; on an all-in-one host the dashboard's only network is the one it shares with
    the guard, so no other container (no function) reaches it."""
    if lab_role == "inference":
        pytest.skip("an inference host runs no CVAT")
    assert compose.GUARD_SERVICE in running
    for caller in compose.NUCLIO_CALLERS:
        assert f"CVAT_NUCLIO_HOST={compose.GUARD_SERVICE}" in host.check_output(f"docker exec {caller} env").split()
    if lab_role == "cvat":
        return
    dashboard = json.loads(host.check_output("docker inspect nuclio"))[0]
    assert set(dashboard["NetworkSettings"]["Networks"]) == {f"{compose.PROJECT}_{compose.GUARDED_NETWORK_KEY}"}
    on_it = json.loads(host.check_output(f"docker network inspect {compose.PROJECT}_{compose.GUARDED_NETWORK_KEY}"))[0]
    assert {c["Name"] for c in on_it["Containers"].values()} == {"nuclio", compose.GUARD_SERVICE}


@pytest.fixture(scope="module")
def outside_address(host) -> str:
    """The host's address as this machine reaches it (the SSH target, resolved as ssh itself resolves it)."""
    backend = host.backend
    name = getattr(getattr(backend, "host", None), "name", None)
    if not name or backend.get_connection_type() not in ("ssh", "paramiko"):
        pytest.skip("exposure checks need an SSH target (--hosts=ssh://...)")
    config = getattr(backend, "ssh_config", None)
    resolved = subprocess.run(["ssh", "-G", *(["-F", config] if config else []), name], capture_output=True, text=True)
    hostname = next((line.split(None, 1)[1] for line in resolved.stdout.splitlines() if line.startswith("hostname ")), name)
    address = socket.gethostbyname(hostname)
    if address.startswith("127."):
        pytest.skip(f"the SSH target {hostname} is a loopback address: run these checks from a machine on the lab's network")
    return address


def answers(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=3).close()
        return True
    except OSError:
        return False


def published_ports(host) -> dict[int, str]:
    found = {}
    for line in host.check_output("docker ps --format '{{.Names}} {{.Ports}}'").splitlines():
        name, _, ports = line.partition(" ")
        for item in ports.split(", "):
            if "->" in item:
                found[int(item.split("->")[0].rsplit(":", 1)[1])] = name
    return found


def test_published_ports_closed_from_outside_but_cvat(host, pins, running, outside_address):
    """Every port Docker publishes (the functions' included) is closed from here, except CVAT's."""
    cvat_ports = exposure.cvat_ports(pins["cvat_tls"])
    if not all(answers(outside_address, port) for port in cvat_ports):
        pytest.skip(f"CVAT itself does not answer {outside_address}:{cvat_ports} from here (outside cvat_allowed_networks?)")
    published = published_ports(host)
    assert any(name.startswith("nuclio-") for name in published.values()), "no function port published: nothing to check"
    reachable = {port: name for port, name in published.items() if port not in cvat_ports and answers(outside_address, port)}
    assert reachable == {}, f"reachable from here: {reachable}"


def test_tls_certificate_valid_for_cvat_host_and_not_near_expiry(host, pins, running, outside_address, cvat_name):
    if pins["cvat_tls"] == "off":
        pytest.skip("cvat_tls is off")
    context = ssl.create_default_context()
    if pins["cvat_tls"] == "lab-ca":
        context = ssl.create_default_context(cafile=str(in_repo(pins["cvat_tls_lab_ca_dir"]) / tls.CA_CERT))
    else:  # an admin's own certificate may come from a CA this machine does not trust: check name and dates only
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((outside_address, 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=cvat_name) as conn:
        cert = x509.load_der_x509_certificate(conn.getpeercert(binary_form=True))
    assert tls.served_problem(cert, cvat_name, int(pins["cvat_tls_renew_days"])) is None


def test_the_lab_ca_certificate_is_renewed_on_the_host(host, pins, running):
    """With lab-ca the host renews CVAT's certificate itself, daily, from an issuer constrained to cvat_host."""
    if pins["cvat_tls"] != "lab-ca":
        pytest.skip("cvat_tls is not lab-ca")
    assert host.service("labforge-tls-renew.timer").is_enabled
    assert host.run("systemctl is-active labforge-tls-renew.timer").stdout.strip() == "active"
    with host.sudo():
        assert host.file("/etc/labforge/tls/issuer.pem").mode == 0o600
        assert host.run("/usr/local/lib/labforge/tls-renew").rc == 0  # a check: it renews only when due


# --- a split lab (labforge/split.py) -------------------------------------------------------------------------------


def test_a_split_labs_cvat_host_runs_no_nuclio_and_calls_its_inference_host(host, pins, lab_role, running):
    if lab_role != "cvat":
        pytest.skip("not a split lab's CVAT host")
    assert host.run("docker inspect nuclio").rc != 0 and "nuclio" not in running
    assert host.check_output("docker ps -aq --filter label=nuclio.io/function-name") == ""
    env = set(host.check_output("docker exec cvat_server env").split())
    assert {"CVAT_NUCLIO_INVOKE_METHOD=dashboard", f"CVAT_NUCLIO_HOST={compose.GUARD_SERVICE}"} <= env
    guard_env = set(host.check_output(f"docker exec {compose.GUARD_SERVICE} env").split())
    assert f"LABFORGE_NUCLIO_UPSTREAM={pins['inference_address']}:{split.DASHBOARD_PORT}" in guard_env


def test_an_inference_host_runs_its_dashboard_on_the_functions_network_and_no_cvat(host, pins, lab_role, functions_here):
    if lab_role != "inference":
        pytest.skip("not a split lab's inference host")
    dashboard = json.loads(host.check_output("docker inspect nuclio"))[0]
    assert dashboard["Config"]["Image"] == inference.dashboard_image(compat.stack(pins).dashboard)
    assert set(dashboard["NetworkSettings"]["Networks"]) == {inference.NETWORK}
    assert {b["HostPort"] for b in dashboard["HostConfig"]["PortBindings"]["8070/tcp"]} == {"8070"}
    for name in host.check_output("docker ps -q --filter label=nuclio.io/function-name").split():
        networks = json.loads(host.check_output(f"docker inspect {name}"))[0]["NetworkSettings"]["Networks"]
        assert set(networks) == {inference.NETWORK}, name
    assert not host.file(pins["cvat_dir"]).exists, "a CVAT checkout on an inference host"
