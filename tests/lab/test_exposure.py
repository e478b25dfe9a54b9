"""Closed by default, tried from outside: a lab host converged with the stack and its functions, probed from a "LAN"
namespace joined to it by a veth pair (testlab/lan.py), as a person on the lab's network would try it.

The stand-ins publish what the upstreams publish (CVAT v2.51.0's compose files: traefik 8080 and 8090, the
Nuclio dashboard 8070 with no authentication and the Docker socket; every function's port on all interfaces, as
Nuclio 1.13's local platform does): on the code before this round, the probe finds all of them open.

The converge runs as a non-root user with --sudo while a local user (`nobody`) watches the host's temporary
directories (testlab/spy.py): no secret (the CVAT admin's password, the TLS key) is ever readable by it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testlab import labhosts, lan, runner, spy
from testlab.standins import cvat
from tests.lab.conftest import TEST_LAB_DIR
from tests.lab.test_doctor import doctor

PASSWORD = "x7!Qm2#pLw9$Tz-exposure"
ENV = {"LABFORGE_CVAT_ADMIN_PASSWORD": PASSWORD}
NAME = "citest-expose.lab"
ADMIN = "labadmin"
SPY_DIRS = "/tmp /var/tmp /etc/labforge /var/lib/labforge /opt/cvat"


def hosts(host, mirror, name: str = "expose.yml", **extra) -> Path:
    return labhosts.hosts_file([host], mirror, TEST_LAB_DIR / name, group="cpu_servers", ssh_user=ADMIN,
                               cvat_start=True, **extra)


def converge(host, mirror, name: str = "expose.yml", **extra) -> runner.DeployRun:
    run = runner.deploy(hosts(host, mirror, name, **extra), "--sudo", env=ENV)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def add_sudo_admin(host) -> None:
    key = Path(f"{labhosts.ssh_key()}.pub").read_text().strip()
    host.ssh(f"id {ADMIN} >/dev/null 2>&1 || useradd -m -s /bin/sh {ADMIN}; install -d -m 700 -o {ADMIN} -g {ADMIN} "
             f"/home/{ADMIN}/.ssh; echo '{key}' > /home/{ADMIN}/.ssh/authorized_keys; chown {ADMIN}:{ADMIN} "
             f"/home/{ADMIN}/.ssh/authorized_keys; echo '{ADMIN} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/{ADMIN}; "
             f"chmod 440 /etc/sudoers.d/{ADMIN}")


def start_spy(host) -> None:
    (host.root / "usr/local/bin/labforge-spy").write_text(Path(spy.__file__).read_text())
    host.ssh("chmod 755 /usr/local/bin/labforge-spy; mkdir -p /var/lib/labforge /run/spy; chown nobody /run/spy; "
             "rm -f /run/spy/stop /run/spy/out; setsid setpriv --reuid=nobody --regid=nogroup --clear-groups "
             f"python3 /usr/local/bin/labforge-spy /run/spy/out /run/spy/stop {SPY_DIRS} >/dev/null 2>&1 < /dev/null &")
    time.sleep(1)


def spy_report(host) -> dict:
    host.ssh("touch /run/spy/stop")
    for _ in range(20):
        if not (host.root / "proc").exists() or host.ssh("pgrep -f labforge-spy", check=False).returncode:
            break
        time.sleep(0.5)
    return json.loads((host.root / "run/spy/out").read_text()) if (host.root / "run/spy/out").exists() else \
        json.loads(host.ssh("cat /run/spy/out").stdout)


@pytest.fixture(scope="module")
def host(boot_host, mirror):
    """A CPU host with SSH on every address (so the LAN can reach it, as a real server's), the engine installed
    by a first converge (CVAT's files only), the stand-in images loaded, and a sudo-capable non-root admin."""
    def ssh_on_every_address(lab_host):
        conf = lab_host.root / "etc/ssh/sshd_config.d/labforge-lab.conf"
        conf.write_text(conf.read_text().replace(f"ListenAddress {lab_host.address}", "ListenAddress 0.0.0.0\nListenAddress ::"))

    lab_host = boot_host("citest-expose", "127.0.0.16", prepare=ssh_on_every_address)
    first = runner.deploy(labhosts.hosts_file([lab_host], mirror, TEST_LAB_DIR / "expose-files.yml", group="cpu_servers"))
    assert first.returncode == 0, first.stderr[-3000:]
    cvat.load_images(lab_host, labhosts.base_tarball())
    add_sudo_admin(lab_host)
    return lab_host


@pytest.fixture(scope="module")
def stack(host, mirror):
    """The first converge with the stack and functions, as the non-root admin with --sudo, watched by the spy."""
    start_spy(host)
    run = converge(host, mirror)
    print(f"first converge (as {ADMIN}, --sudo): {run.totals.operations} ops, changed={run.totals.changed}, {run.seconds:.1f}s")
    return run, spy_report(host)


@pytest.fixture(scope="module")
def network(host, stack):
    joined = lan.Lan(host).attach()
    yield joined
    joined.detach()


# What CVAT v2.51.0's compose files publish (traefik 8080, 8090; the dashboard 8070) and CVAT's TLS ports: probed
# whether or not anything is published there now.
UPSTREAM_PORTS = {8070: "the Nuclio dashboard's port upstream", 8080: "CVAT (traefik)", 8090: "traefik's 8090 upstream",
                  80: "CVAT's http (TLS)", 443: "CVAT's https (TLS)"}


def probe_all(host, network) -> dict[int, tuple[str, str]]:
    ports = {**UPSTREAM_PORTS, **lan.listening_ports(host)}
    states = network.probe(set(ports))
    for port in sorted(ports):
        print(f"  {port:>5}  {states[port]:<8}  {ports[port]}")
    return {port: (states[port], ports[port]) for port in ports}


def open_ports(found: dict[int, tuple[str, str]]) -> set[int]:
    return {port for port, (state, _) in found.items() if state == "open"}


def lambda_functions(network, scheme: str = "http", port: int = 8080, *curl) -> list[dict]:
    url = f"{scheme}://{NAME}:{port}/api/lambda/functions"
    proc = network.curl("-f", "--resolve", f"{NAME}:{port}:{lan.HOST_ADDRESS}", *curl, url)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def call_function(network, name: str, scheme: str = "http", port: int = 8080, *curl) -> dict:
    url = f"{scheme}://{NAME}:{port}/api/lambda/functions/{name}"
    proc = network.curl("-f", "--resolve", f"{NAME}:{port}:{lan.HOST_ADDRESS}", "-X", "POST", "-H",
                        "Content-Type: application/json", "-d", '{"frame": 0}', *curl, url)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


FUNCTIONS = {"openvino-omz-public-yolo-v3-tf", "openvino-dextr"}


def assert_cvat_calls_its_functions(network, *how) -> None:
    listed = {f["id"]: f for f in lambda_functions(network, *how)}
    assert set(listed) >= FUNCTIONS, listed
    assert all(listed[name]["state"] == "ready" for name in FUNCTIONS), listed
    for name in FUNCTIONS:
        assert call_function(network, name, *how)["function"] == name


# --- from the LAN -------------------------------------------------------------------------------------------------


def test_from_the_lan_only_cvat_and_ssh_answer(host, network):
    print("\nports probed from the LAN (192.0.2.2 -> 192.0.2.1):")
    found = probe_all(host, network)
    assert any("nuclio-nuclio-" in what for _, what in found.values()), "the probe must see the functions' ports"
    assert open_ports(found) == {8080, 2222}, found


def test_a_deploy_through_the_dashboard_from_the_lan_fails(host, network):
    attempt = network.curl("-X", "POST", "-d", '{"metadata": {"name": "lan-miner"}}', f"http://{lan.HOST_ADDRESS}:8070/api/functions")
    assert attempt.returncode != 0, attempt.stdout
    assert "nuclio-nuclio-lan-miner" not in host.ssh("docker ps -a --format '{{.Names}}'").stdout


def test_cvat_still_lists_and_calls_the_functions_from_the_lan(network):
    assert_cvat_calls_its_functions(network)


def test_the_second_converge_changes_nothing(host, mirror, network):
    again = converge(host, mirror)
    assert (again.totals.changed, again.totals.errors) == (0, 0), again.totals.changed_ops
    print(f"second converge: {again.totals.operations} ops, changed=0, {again.seconds:.1f}s")


def test_closed_after_a_docker_restart_and_a_function_redeploy(host, network):
    host.ssh("systemctl restart docker")
    assert wait_for_cvat(network)
    assert open_ports(probe_all(host, network)) == {8080, 2222}
    host.ssh("nuctl deploy --project-name cvat --path /opt/cvat/serverless/openvino/dextr/nuclio --platform local "
             "--platform-config '{\"attributes\": {\"network\": \"cvat_cvat\"}}' --labels labforge-function=x,labforge-src-hash=0")
    assert open_ports(probe_all(host, network)) == {8080, 2222}
    assert_cvat_calls_its_functions(network)


def wait_for_cvat(network, scheme: str = "http", port: int = 8080, *curl, timeout: float = 180) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = network.curl("-f", "-o", "/dev/null", "--resolve", f"{NAME}:{port}:{lan.HOST_ADDRESS}", *curl,
                            f"{scheme}://{NAME}:{port}/api/lambda/functions")
        if proc.returncode == 0:
            return True
        time.sleep(2)
    return False


YOLO, DEXTR = "serverless/openvino/omz/public/yolo-v3-tf", "serverless/openvino/dextr"
PORTS = {"openvino-omz-public-yolo-v3-tf": 32701, "openvino-dextr": 32702}  # group_data's nuclio_function_ports


def function_ports(host) -> dict[str, str]:
    """Each function container's published host port(s), as Docker will bind them again when it starts it."""
    names = host.ssh("docker ps -a --filter label=nuclio.io/function-name --format '{{.Names}}'").stdout.split()
    found = json.loads(host.ssh(f"docker inspect {' '.join(names)}").stdout)
    return {c["Config"]["Labels"]["nuclio.io/function-name"]:
            ",".join(b["HostPort"] for b in c["HostConfig"]["PortBindings"]["8080/tcp"]) for c in found}


def test_each_function_keeps_its_port_when_redeployed_in_another_order(host, mirror, network):
    """Both functions gone and deployed again, DEXTR first: each gets the port nuclio_function_ports gives it. Before
    the fix Nuclio gave them `--publish 8080` (no previous deployment), i.e. whatever Docker picked next in its
    random range, and a redeploy pinned whatever a function had then (getFunctionHTTPPort, platform.go 1102-1127)."""
    assert function_ports(host) == {name: str(port) for name, port in PORTS.items()}
    host.ssh("docker rm -f nuclio-nuclio-openvino-omz-public-yolo-v3-tf nuclio-nuclio-openvino-dextr")
    run = converge(host, mirror, "expose-reversed.yml", nuclio_functions=[DEXTR, YOLO])
    deploys = [op.split(" on ")[0] for op in run.totals.changed_ops if "Deploy function" in op]
    assert deploys == [f"Functions | Deploy function {DEXTR}", f"Functions | Deploy function {YOLO}"], deploys
    assert function_ports(host) == {name: str(port) for name, port in PORTS.items()}
    assert_cvat_calls_its_functions(network)


def test_after_a_reboot_every_function_answers_before_any_converge_and_the_host_stays_closed(host, mirror, network):
    """Docker starts every container again in its own order and hands random ports out from the start of its range
    (moby libnetwork/portallocator: a new allocator begins at the range's first port). A function port in that range
    was taken by whichever function started first, and the other stayed in `error` until someone converged (seen
    here before the fix). Ports below the range are never handed out, so CVAT lists and calls both at once."""
    host.stop()
    host.boot()
    network.attach()
    assert wait_for_cvat(network), "CVAT did not come back after the reboot"
    deadline = time.monotonic() + 120  # Docker restarts the `restart: always` containers one after another
    while time.monotonic() < deadline and not all(f["state"] == "ready" for f in lambda_functions(network)
                                                  if f["id"] in FUNCTIONS):
        time.sleep(2)
    assert_cvat_calls_its_functions(network)
    assert function_ports(host) == {name: str(port) for name, port in PORTS.items()}
    assert open_ports(probe_all(host, network)) == {8080, 2222}
    again = converge(host, mirror)
    assert (again.totals.changed, again.totals.errors) == (0, 0), again.totals.changed_ops


# --- IPv6, local accounts, containers, CVAT's own users: each of these reached root before this round ---------------


def test_from_the_lan_over_ipv6_link_local_and_global_only_ssh_answers(host, network):
    """docker-proxy binds every port Docker publishes without a host address on [::] too, forwarding to the
    container's IPv4 address (moby/libnetwork c3fabc68), and that traffic meets INPUT, not DOCKER-USER. Before the
    fix both function ports and CVAT answered here, from a LAN that has nothing but IPv6 link-local addresses."""
    ports = {**UPSTREAM_PORTS, **lan.listening_ports(host)}
    assert any("nuclio-nuclio-" in what for what in ports.values()), ports
    for address in (network.host_link_local(), lan.HOST_ADDRESS6):
        states = network.probe(set(ports), address)
        print(f"\nports probed from the LAN over IPv6 ({address}):")
        for port in sorted(ports):
            print(f"  {port:>5}  {states[port]:<8}  {ports[port]}")
        assert {port for port, state in states.items() if state == "open"} == {labhosts.SSH_PORT}, states


def test_cvat_allowed_networks_takes_ipv6_networks(host, mirror, network):
    converge(host, mirror, cvat_allowed_networks=["192.0.2.0/24", "2001:db8:1ab::/64"])
    assert network.probe({8080}, lan.HOST_ADDRESS6) == {8080: "open"}
    assert network.probe({8080}, network.host_link_local()) == {8080: "filtered"}  # fe80::/10 is not allowed
    converge(host, mirror)
    assert network.probe({8080}, lan.HOST_ADDRESS6) == {8080: "filtered"}


def dashboard_addresses(host) -> list[str]:
    networks = json.loads(host.ssh("docker inspect nuclio").stdout)[0]["NetworkSettings"]["Networks"]
    return [n["IPAddress"] for n in networks.values() if n.get("IPAddress")]


CONNECT = "import socket,sys; socket.create_connection((sys.argv[1], 8070), timeout=3).close(); print('connected')"


def test_a_local_account_cannot_reach_the_dashboard_and_root_can(host, stack):
    """Before the fix an unprivileged account opened the dashboard at its container address: root by one deploy."""
    addresses = dashboard_addresses(host)
    assert addresses
    for address in addresses:
        as_nobody = host.ssh(f"setpriv --reuid=nobody --regid=nogroup --clear-groups python3 -c \"{CONNECT}\" {address}",
                             check=False)
        print(f"nobody -> {address}:8070: rc={as_nobody.returncode} {as_nobody.stderr.strip()[-120:]}")
        assert as_nobody.returncode != 0 and "connected" not in as_nobody.stdout, (address, as_nobody.stdout)
        as_root = host.ssh(f"python3 -c \"{CONNECT}\" {address}", check=False)
        assert as_root.stdout.strip() == "connected", as_root.stderr


@pytest.mark.parametrize("container", ["nuclio-nuclio-openvino-dextr", "cvat_server"])
def test_a_function_container_or_any_other_cannot_reach_the_dashboard(host, stack, container):
    """A function runs model code; before the fix it shared CVAT's network with the dashboard, as did every service
    of CVAT's. Now only the guard does (cvat_server reaches Nuclio through it alone)."""
    for address in [*dashboard_addresses(host), "nuclio"]:
        attempt = host.ssh(f"docker exec {container} python3 -c \"{CONNECT}\" {address}", check=False)
        print(f"{container} -> {address}:8070: rc={attempt.returncode} {attempt.stderr.strip()[-120:]}")
        assert attempt.returncode != 0 and "connected" not in attempt.stdout, (address, attempt.stdout)


MARK = "/tmp/labforge-pwned"


def lambda_request(network, function: str):
    body = json.dumps({"function": function, "task": 1})
    return network.curl("-o", "/dev/stderr", "-w", "%{http_code}", "--resolve", f"{NAME}:8080:{lan.HOST_ADDRESS}", "-X",
                        "POST", "-H", "Content-Type: application/json", "-d", body, f"http://{NAME}:8080/api/lambda/requests")


def test_an_ordinary_cvat_user_cannot_run_a_shell_in_the_dashboard(host, network):
    """GHSA-jx7q-cpg6-669g through CVAT: POST /api/lambda/requests relays `function` to GET /api/functions/<it>, and
    the stand-in dashboard runs it through a shell as Nuclio 1.13/1.16 do. Before the fix the mark appeared in the
    dashboard's container (the one holding the Docker socket); now the guard answers 400 and CVAT relays it."""
    host.ssh(f"docker exec nuclio rm -f {MARK}")
    crafted = lambda_request(network, f"x;touch {MARK};")
    print(f"crafted function through CVAT: HTTP {crafted.stdout} {crafted.stderr.strip()[-200:]}")
    pwned = host.ssh(f"docker exec nuclio test -e {MARK}", check=False).returncode == 0
    assert not pwned, "the crafted function name ran a shell command in the Nuclio dashboard's container"
    assert crafted.stdout.startswith("4"), crafted.stdout
    fair = lambda_request(network, "openvino-dextr")
    print(f"a real function through CVAT: HTTP {fair.stdout} {fair.stderr.strip()[-200:]}")
    assert fair.stdout == "200", fair.stderr


def test_docker_does_not_start_while_the_firewall_failed(host, mirror, network):
    """Before the fix docker.service only Wanted the firewall unit: with its script failing, Docker started every
    container with its port open. Now it does not start, and says why."""
    script = host.root / "usr/local/lib/labforge/firewall"
    kept = script.read_text()
    try:
        script.write_text("#!/bin/sh\necho 'labforge firewall: broken on purpose by the test' >&2\nexit 1\n")
        host.ssh("systemctl stop docker", check=False)
        started = host.ssh("systemctl start docker", check=False)
        print(f"systemctl start docker with the firewall failing: rc={started.returncode} {started.stderr.strip()[-200:]}")
        assert host.ssh("systemctl is-active docker", check=False).stdout.strip() != "active"
        assert network.probe({8080}) != {8080: "open"}
        _, lines, _ = doctor(hosts(host, mirror))
        status, _, detail = lines[host.name]
        print(f"doctor: {status} {detail}")
        assert status == "FAIL" and "labforge-firewall.service is failed, so Docker does not start (it Requires= the rules): " \
            "labforge firewall: broken on purpose by the test" in detail, detail
    finally:
        script.write_text(kept)
        host.ssh("systemctl reset-failed labforge-firewall.service docker.service; systemctl start docker", check=False)
    assert wait_for_cvat(network)


# --- settings that open a little ----------------------------------------------------------------------------------


def test_the_dashboard_on_loopback_for_ssh_tunnels_and_then_closed_again(host, mirror, network):
    converge(host, mirror, nuclio_dashboard_publish="127.0.0.1")
    inside = host.ssh("curl -fsS -H 'x-nuclio-project-name: cvat' http://127.0.0.1:8070/api/functions", check=False)  # root
    as_nobody = host.ssh("setpriv --reuid=nobody --regid=nogroup --clear-groups curl -sS --max-time 5 http://127.0.0.1:8070/api/functions",
                         check=False)
    assert as_nobody.returncode != 0, as_nobody.stdout  # a local account does not reach it
    assert inside.returncode == 0 and set(json.loads(inside.stdout)) >= FUNCTIONS, inside.stderr
    assert network.probe({8070}) != {8070: "open"}
    converge(host, mirror)
    assert host.ssh("curl -fsS http://127.0.0.1:8070/api/functions", check=False).returncode != 0
    assert json.loads(host.ssh("docker inspect nuclio").stdout)[0]["HostConfig"]["PortBindings"] in ({}, None)


def test_cvat_allowed_networks_limits_who_reaches_cvat(host, mirror, network):
    converge(host, mirror, cvat_allowed_networks=["198.51.100.0/24"])
    assert network.probe({8080}) == {8080: "filtered"}
    converge(host, mirror, cvat_allowed_networks=["192.0.2.0/24", "198.51.100.0/24"])
    assert network.probe({8080}) == {8080: "open"}
    converge(host, mirror)


def test_a_bad_allowed_network_is_refused_before_anything_changes(host, mirror, stack):
    watched = ["/usr/local/lib/labforge/firewall", "/opt/cvat/docker-compose.custom.override.yml", "/etc/labforge/cvat.env"]
    before = {path: (host.root / path.lstrip("/")).read_bytes() for path in watched}
    run = runner.deploy(hosts(host, mirror, cvat_allowed_networks=["192.0.2.0/33"]), "--sudo", env=ENV)
    assert run.returncode != 0
    assert "cvat_allowed_networks: '192.0.2.0/33' is not a network" in run.stderr, run.stderr[-2000:]
    assert {path: (host.root / path.lstrip("/")).read_bytes() for path in watched} == before


# --- TLS --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab_ca(host, mirror, network):
    """cvat_tls=lab-ca: the lab CA made beside the (test) inventory, the converge again watched by the spy."""
    ca_dir = TEST_LAB_DIR / "lab-ca"
    start_spy(host)
    run = converge(host, mirror, "tls.yml", cvat_tls="lab-ca", cvat_tls_lab_ca_dir=str(ca_dir))
    print(f"converge with cvat_tls=lab-ca: {run.totals.operations} ops, changed={run.totals.changed}, {run.seconds:.1f}s")
    return ca_dir, run, spy_report(host)


def test_lab_ca_serves_cvat_over_tls_to_clients_that_trust_it(host, network, lab_ca):
    ca_dir, run, _ = lab_ca
    cacert = str(ca_dir / "ca.crt")
    assert wait_for_cvat(network, "https", 443, "--cacert", cacert)
    assert_cvat_calls_its_functions(network, "https", 443, "--cacert", cacert)
    untrusting = network.curl("--resolve", f"{NAME}:443:{lan.HOST_ADDRESS}", f"https://{NAME}/api/server/about")  # system CAs
    assert untrusting.returncode == 60, (untrusting.returncode, untrusting.stderr)  # curl: peer certificate not trusted
    plain = network.curl("-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "--resolve", f"{NAME}:80:{lan.HOST_ADDRESS}",
                         f"http://{NAME}/api/server/about")
    assert plain.stdout == f"301 https://{NAME}/api/server/about", plain.stdout
    (line,) = run.summary_lines()
    assert f"CVAT at https://{NAME} (admin user 'admin')" in line, line
    print("\nports probed from the LAN with cvat_tls=lab-ca:")
    assert open_ports(probe_all(host, network)) == {80, 443, 2222}


def test_the_lab_ca_key_stays_on_the_control_machine_and_the_host_keys_are_root_only(host, lab_ca):
    ca_dir, _, _ = lab_ca
    assert (ca_dir / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (ca_dir.stat().st_mode & 0o777) == 0o700
    assert host.ssh("stat -c '%a %U' /etc/labforge/tls /etc/labforge/tls/key.pem /etc/labforge/tls/issuer.pem").stdout.split() == [
        "700", "root", "600", "root", "600", "root"]
    assert not list(host.root.glob("etc/labforge/**/ca.key"))
    assert host.ssh("stat -c '%a' /etc/labforge/lab-ca.crt").stdout.strip() == "644"  # for users to import
    assert host.ssh("cat /etc/labforge/lab-ca.crt").stdout == (ca_dir / "ca.crt").read_text()
    constraints = subprocess.run(["openssl", "x509", "-noout", "-ext", "nameConstraints", "-in", str(ca_dir / "ca.crt")],
                                 capture_output=True, text=True).stdout
    assert f"DNS:{NAME}" in constraints, constraints  # the CA signs for the lab's names only


def served_serial(network, *extra: str) -> tuple[str, str]:
    """The serial and subjectAltName of the certificate traefik serves on 443, as a LAN client gets it."""
    proc = network.run("sh", "-c", f"echo | openssl s_client -connect {lan.HOST_ADDRESS}:443 -servername {NAME} 2>/dev/null "
                       "| openssl x509 -noout -serial -ext subjectAltName")
    return proc.stdout, proc.stderr


def test_tls_second_converge_changes_nothing_and_the_timer_renews_in_time(host, mirror, network, lab_ca):
    """The host renews CVAT's certificate itself (labforge-tls-renew.timer, daily), from its issuer, and restarts
    traefik: what the LAN is served changes. Before this round a certificate was renewed only by a converge."""
    ca_dir, _, _ = lab_ca
    again = converge(host, mirror, "tls.yml", cvat_tls="lab-ca", cvat_tls_lab_ca_dir=str(ca_dir))
    assert (again.totals.changed, again.totals.errors) == (0, 0), again.totals.changed_ops
    assert host.ssh("systemctl is-enabled labforge-tls-renew.timer; systemctl is-active labforge-tls-renew.timer").stdout.split() == [
        "enabled", "active"]
    checked = host.ssh("systemctl start labforge-tls-renew.service && journalctl -u labforge-tls-renew.service -n 5 -o cat")
    assert "is good for more than 30 days" in checked.stdout, checked.stdout
    before, _ = served_serial(network)
    assert f"DNS:{NAME}" in before, before
    renewed = host.ssh("LABFORGE_TLS_RENEW_DAYS=91 /usr/local/lib/labforge/tls-renew")  # as when fewer days are left
    print(f"\n{renewed.stdout.strip()}")
    assert "fewer than 91 days left" in renewed.stdout
    assert wait_for_cvat(network, "https", 443, "--cacert", str(ca_dir / "ca.crt"))
    after, _ = served_serial(network)
    assert after != before and f"DNS:{NAME}" in after, (before, after)
    assert_cvat_calls_its_functions(network, "https", 443, "--cacert", str(ca_dir / "ca.crt"))


def test_tls_settings_that_cannot_work_are_refused_before_anything_changes(host, mirror, lab_ca):
    ca_dir, _, _ = lab_ca
    watched = ["/etc/labforge/tls/cert.pem", "/etc/labforge/tls/issuer.crt", "/usr/local/lib/labforge/tls-renew"]
    before = {path: (host.root / path.lstrip("/")).read_bytes() for path in watched}
    too_late = runner.deploy(hosts(host, mirror, "tls.yml", cvat_tls="lab-ca", cvat_tls_lab_ca_dir=str(ca_dir),
                                   cvat_tls_renew_days=400), "--sudo", env=ENV)
    assert too_late.returncode != 0 and "cvat_tls_renew_days is 400: it must be between 1 and 89" in too_late.stderr
    elsewhere = runner.deploy(hosts(host, mirror, "tls.yml", cvat_tls="lab-ca", cvat_tls_lab_ca_dir=str(TEST_LAB_DIR / "other-ca"),
                                    cvat_tls_lab_ca_names=["elsewhere.example"]), "--sudo", env=ENV)
    assert elsewhere.returncode != 0, elsewhere.stderr[-2000:]
    assert f"may sign only for elsewhere.example, not {NAME}" in elsewhere.stderr, elsewhere.stderr[-2000:]
    assert {path: (host.root / path.lstrip("/")).read_bytes() for path in watched} == before


def assert_spy_read_no_secret(report: dict) -> None:
    readable = {path: text for path, text in report["read"].items() if text != "<not readable>"}
    assert any("/pyinfra-" in path for path in readable), report  # the spy did see pyinfra's (other) uploads
    leaked = [path for path, text in readable.items() if PASSWORD in text or "PRIVATE KEY" in text]
    assert leaked == [], leaked


def test_the_admin_password_was_never_readable_by_another_user(stack):
    """The spy ran through the admin's creation (a non-root SSH user with --sudo): it read pyinfra's other uploads
    (so it was watching), never the password. Before the fix it read it from /tmp/pyinfra-<sha1>."""
    assert_spy_read_no_secret(stack[1])


def test_the_tls_key_was_never_readable_by_another_user(host, lab_ca):
    assert_spy_read_no_secret(lab_ca[2])
    assert "PRIVATE KEY" in host.ssh("cat /etc/labforge/tls/key.pem").stdout


def test_the_testinfra_checks_pass_from_the_lan(host, mirror, network, lab_ca):
    """tests/host run as a user would run them, from a machine on the lab's network: the exposure checks probe
    from where pytest runs."""
    ca_dir, _, _ = lab_ca
    path = hosts(host, mirror, "tls.yml", cvat_tls="lab-ca", cvat_tls_lab_ca_dir=str(ca_dir))
    ssh_config = TEST_LAB_DIR / "expose.ssh_config"
    ssh_config.write_text(f"Host {host.name}\n  HostName {lan.HOST_ADDRESS}\n  Port {labhosts.SSH_PORT}\n  User root\n"
                          f"  IdentityFile {labhosts.ssh_key()}\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
                          "  LogLevel ERROR\n")
    proc = subprocess.run(
        ["ip", "netns", "exec", network.namespace, sys.executable, "-m", "pytest", "tests/host", f"--hosts=ssh://{host.name}",
         f"--ssh-config={ssh_config}", "--role=cpu", "-q", "-rA"], cwd=runner.REPO,
        env={**os.environ, "LAB_HOSTS": str(path)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    passed = {line.split("::")[-1].split("[")[0] for line in proc.stdout.splitlines() if line.startswith("PASSED ")}
    wanted = {"test_nuclio_dashboard_not_published", "test_published_ports_closed_from_outside_but_cvat",
              "test_tls_certificate_valid_for_cvat_host_and_not_near_expiry"}
    assert wanted <= passed, f"not passed: {sorted(wanted - passed)}\n{proc.stdout[-3000:]}"
