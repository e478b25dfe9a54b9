"""Inference layer: on a split lab's inference host, the Nuclio dashboard its CVAT host calls (labforge/inference.py).

The dashboard is (re)created only when its compose file changed or it is not running, the way the CVAT layer brings up
CVAT's stack: a second converge changes nothing. The functions layer deploys the functions onto its network after.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import FileContents
from pyinfra.operations import files, server

from labforge import compat, compose, inference, platform, report, split
from labforge.facts import ComposeServiceStates


@deploy("Inference")
def inference_layer() -> None:
    data = host.data
    if split.role(data) != "inference" or not data.get("cvat_start"):
        return
    report.served_by(f"serves {data.get('inference_for')}: Nuclio dashboard at "
                     f"http://{split.address(data)}:{split.DASHBOARD_PORT}, answering {data.get('cvat_address')} only")
    image = inference.dashboard_image(compat.stack(data).dashboard, platform.current().deb_arch)
    text = inference.render_compose(image, split.DASHBOARD_PORT)
    files.directory(name=inference.DIR, path=inference.DIR, mode="0755")
    files.directory(name="/etc/labforge", path="/etc/labforge", mode="0755")
    files.put(name=f"Nuclio dashboard compose file ({image})", src=StringIO(text), dest=inference.COMPOSE_FILE, mode="0644")
    args = f"-p {inference.PROJECT} -f {inference.COMPOSE_FILE}"
    states = host.get_fact(ComposeServiceStates, project=inference.PROJECT, cvat_dir=inference.DIR,
                           compose_args=f"-f {inference.COMPOSE_FILE}")
    digest = compose.inputs_digest(text)
    stored = "\n".join(host.get_fact(FileContents, path=inference.DIGEST_FILE) or []).strip()
    if stored != digest or not states or any(state != "running" for state in states.values()):
        server.shell(name=f"docker compose up -d (Nuclio dashboard {image}, for {data.get('cvat_address')})", commands=[
            f"docker compose {args} up -d --remove-orphans",
            f"echo {digest} > {inference.DIGEST_FILE}",
        ])
