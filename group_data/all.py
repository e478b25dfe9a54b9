"""Pinned versions, upstream sources and site settings for every host.

This is the one place versions, URLs and checksums live. Every URL is a plain
variable so an air-gapped lab can point it at its own mirror (hosts file `vars:`
or `pyinfra --data key=value`). Every setting the deploy knows is defined here or in a group's file;
any other name in a hosts file or on --data is refused (labforge/settings.py).
"""

# --- GPU selection --------------------------------------------------------------------------
# None: GPU layers run when the host has an NVIDIA display/3D PCI device. gpu_servers sets True.
gpu = None
# A host marked gpu=True without an NVIDIA PCI device is refused (False only for VMs/test labs).
gpu_require_pci_device = True

# --- apt -------------------------------------------------------------------------------------
# Optional HTTP(S) proxy for apt, e.g. "http://apt-cache.lab:3142" (None: no proxy file).
apt_proxy = None
# None: `apt-get update` runs only when needed (a repository changed, or a package or pinned version the
# run installs is not in apt's cache), so a converged host never reports it. A number of seconds adds
# pyinfra's cache_time rule: update when the last update is older than that.
apt_cache_time = None
# Seconds every apt/dpkg call waits for apt's locks (unattended-upgrades holds them for minutes after a
# fresh server's first boot) before the run fails with one line naming the process that holds them.
apt_lock_timeout = 600
# What the base layer installs: tools the later layers (and an admin) use (python3-yaml: the functions layer's
# labforge/function_config.py and the upgrade's labforge/function_inputs.py read function YAMLs on the host).
base_packages = ["git", "curl", "ca-certificates", "gnupg", "gcc", "python3-yaml"]

# --- Docker Engine (https://docs.docker.com/engine/install/ubuntu/) --------------------------
# Docker's apt repository root; the distro id (ubuntu/debian) is appended.
docker_repo_url = "https://download.docker.com/linux"
# sha256 of Docker's armoured signing key ({docker_repo_url}/{distro}/gpg, same file for ubuntu and debian;
# fingerprint 9DC8 5822 9FC7 DD38 854A E2D8 8D81 803C 0EBF CD88), as pinned by geerlingguy/ansible-role-docker.
docker_gpg_sha256 = "1500c1f56fa9e26b9b8f42452a553675796ade0807cdce11975eb98170b3a570"
# Docker Engine + Compose v2 from Docker's repo, each at an exact version, held. Docker's repo appends
# ~<distro>.<release>~<codename> to every version (e.g. 5:28.5.2-1~ubuntu.24.04~noble,
# 1.7.29-1~debian.12~bookworm). 28.5.2 is the newest Docker release whose daemon accepts the API 1.42
# that CVAT v2.51.0's Nuclio dashboard speaks without configuration (see cvat_stack_compat below);
# the four companions are those public installs pin beside it (e.g. Coolify's Docker 28 guide).
docker_package_versions = {
    "docker-ce": "5:28.5.2-1",
    "docker-ce-cli": "5:28.5.2-1",
    "containerd.io": "1.7.29-1",
    "docker-buildx-plugin": "0.30.1-1",
    "docker-compose-plugin": "2.40.3-1",
}
# Distro packages that conflict with Docker's own (removed before install).
docker_conflicting_packages = ["docker.io", "docker-doc", "docker-compose", "docker-compose-v2", "podman-docker", "containerd", "runc"]

# --- NVIDIA driver ---------------------------------------------------------------------------
# The one driver setting: the branch, installed from NVIDIA's CUDA repository (cuda-drivers-<branch>) and
# locked there by an apt preferences pin on <branch>.* (see tasks/nvidia.py for why: Ubuntu's
# nvidia-driver-550-server is now a transitional package to a newer branch, and NVIDIA's Debian
# cuda-drivers-<branch> depends on open-ended versions). R550 is end-of-life: the run says so.
nvidia_driver_branch = "550"
# Branches that get the end-of-life notice (NVIDIA/gpu-driver-container#381 for R550).
nvidia_driver_eol_branches = ["550"]
# Reboot the host when the driver (or the nouveau blacklist) changed; False: the run says "REBOOT REQUIRED".
reboot_after_driver = False

# --- NVIDIA Container Toolkit (https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/) -
# NVIDIA's libnvidia-container repository root (stable/deb/<arch> is appended).
nvidia_container_toolkit_repo_url = "https://nvidia.github.io/libnvidia-container"
# sha256 of NVIDIA's armoured repo key ({repo}/gpgkey; fingerprint C95B321B61E88C1809C4F759DDCAE044F796ECB0),
# as pinned in several public provisioning scripts.
nvidia_container_toolkit_gpg_sha256 = "c880576d6cf75a48e5027a871bac70fd0421ab07d2b55f30877b21f1c87959c9"
# Exact dpkg version of nvidia-container-toolkit and its three sibling packages (pinned together).
nvidia_container_toolkit_version = "1.17.8-1"

# --- CUDA ------------------------------------------------------------------------------------
# NVIDIA's CUDA repository root ({distro}{version}/{x86_64|sbsa}/ is appended).
cuda_repo_url = "https://developer.download.nvidia.com/compute/cuda/repos"
# Version of the cuda-keyring package that installs NVIDIA's repo key and source.
cuda_keyring_version = "1.1-1"
# sha256 of cuda-keyring_<version>_all.deb per "<distro><version>/<arch>" repo directory, as pinned in
# GoogleCloudPlatform/compute-gpu-installation (NVIDIA_KEYRING_SHA256_SUMS) and other public installers.
# ubuntu2204/sbsa is deliberately absent: only one public source for it was found; add it once verified.
cuda_keyring_sha256 = {
    "ubuntu2204/x86_64": "d93190d50b98ad4699ff40f4f7af50f16a76dac3bb8da1eaaf366d47898ff8df",
    "ubuntu2404/x86_64": "d2a6b11c096396d868758b86dab1823b25e14d70333f1dfa74da5ddaf6a06dba",
    "debian12/x86_64": "e7f219eab6fe4819cdb5c15b98233dc3420302d9c00883219cd3d896857cf48d",
    "ubuntu2404/sbsa": "6ea7d2737648936820e85677177957a0f6521b840d98eb0bbae0a4f003fa7249",
}
# CUDA toolkit release: package cuda-toolkit-<major>-<minor>, installed under /usr/local/cuda-<release>.
cuda_version = "12.8"

# --- Nuclio CLI ------------------------------------------------------------------------------
# nuctl release. None: the one cvat_stack_compat lists for cvat_version (nuctl follows CVAT). When set, it must
# share its minor version with the Nuclio dashboard of the pinned CVAT (checked).
nuctl_version = None
# Download URL template ({version}, {arch} = amd64/arm64).
nuctl_url = "https://github.com/nuclio/nuclio/releases/download/{version}/nuctl-{version}-linux-{arch}"
# sha256 per arch of the nuctl binary; wins over the lock file. Nuclio publishes no checksums, so by
# default nuctl is pinned on first use: the first download whose `nuctl version` reports nuctl_version
# records its sha256 in download_lock_file, and every later run and host must get exactly that file.
nuctl_sha256: dict[str, str] = {}
# The lock file (on the control machine; relative paths are relative to this repository). Commit it
# with your inventory, as Terraform's .terraform.lock.hcl.
download_lock_file = "labforge.lock"

# --- Compatibility of the pinned stack (checked while planning: labforge/compat.py) ----------------
# CVAT tag -> the Nuclio dashboard its components/serverless/docker-compose.serverless.yml runs (read at the
# tag), the nuctl of the same release pinned with it, the oldest Docker API that dashboard's client speaks,
# CVAT's manage.py inside cvat_server (Dockerfile at the tag), and the upgrade guide's steps for moving to the
# row (labforge/upgrades.py). docs/compatibility.md has the sources of every cell.
# v2.51.0 = commit dfd505e7: dashboard 1.13.0, Docker API 1.42 ("client version 1.42 is too old" against
#   Docker 29: cvat-ai/cvat#10013, #10033); manage.py in /home/django (Dockerfile: COPY ... ${HOME}/).
# v2.73.0 = commit 7972cb4f2: dashboard 1.16.3 with no host port (#10306); Nuclio's move off 1.13 fixed Docker
#   29 (cvat-ai/cvat#10033 closed "Fixed in #10091", dashboard 1.15.9), so its client speaks 1.44 or newer;
#   the source moved to /opt/cvat at v2.72.0 (upgrade guide "Upgrade to v2.72.0 or later"; /home/django/manage.py
#   stays as a link "for backwards compatibility", Dockerfile line 203).
cvat_stack_compat = {
    "v2.51.0": {"nuclio_dashboard": "1.13.0", "nuctl": "1.13.23", "docker_api": "1.42",
                "manage_py": "/home/django/manage.py", "upgrade_steps": []},
    "v2.73.0": {"nuclio_dashboard": "1.16.3", "nuctl": "1.16.3", "docker_api": "1.44",
                "manage_py": "/opt/cvat/manage.py", "upgrade_steps": ["v2.72.0: source in /opt/cvat"]},
}
# Docker Engine major -> the oldest client API its daemon accepts by default: 28.x 1.24 (docker/docs#22653),
# 29.x 1.44 (moby/moby#51186). Engines from 29 on are told the stack's API in daemon.json "min-api-version"
# (moby/moby#51371) when they are already installed and newer than the pin.
docker_default_min_api = {"28": "1.24", "29": "1.44"}

# --- CVAT ------------------------------------------------------------------------------------
# CVAT release tag, a row of cvat_stack_compat. None (the default): a host without a CVAT checkout starts on the
# newest row (v2.73.0), and a host with one stays on the release its checkout is at, since moving a lab is an upgrade
# only its admin decides (labforge/releases.py). Set it to upgrade (docs/backups-and-upgrades.md). The deploy checks
# the tag's own serverless file against the row's dashboard and nuctl and refuses a mismatch.
cvat_version = None
# Security fixes CVAT shipped after the oldest row: [release that has it, advisory or pull request, what]. A host on an
# older release gets one notice naming those it lacks. Read from CHANGELOG.md at v2.73.0 (commit 7972cb4f2), the
# "Security" sections of v2.52.0..v2.73.0 (v2.73.0 has none).
cvat_security_fixes = [
    ["v2.53.0", "GHSA-3g7v-xjh7-xmqx", "directory traversal in /api/server/share"],
    ["v2.55.0", "GHSA-3m7p-wx65-c7mp", "XSS in skeleton SVG images"],
    ["v2.55.0", "GHSA-7pvv-w55f-qmw7", "staff users could change their own permissions"],
    ["v2.55.0", "cvat-ai/cvat#10183", "OPA upgraded to 1.12.2"],
    ["v2.64.0", "GHSA-m2h7-6xqm-p9v5", "XSS in annotation guides"],
    ["v2.65.0", "GHSA-6f87-4g86-p9gw", "path traversals"],
    ["v2.67.0", "GHSA-w6mx-95ff-72cv", "XSS in annotation guide assets"],
    ["v2.69.0", "cvat-ai/cvat#10807", "quality report location disclosed across organizations"],
    ["v2.70.0", "GHSA-chxx-45vm-qhc9", "XSS in annotation guides of audio tasks"],
    ["v2.72.0", "GHSA-m7p7-6w4m-886p", "overly lax authorization of lambda requests"],
    ["v2.72.0", "GHSA-7xhx-3q27-xvcx", "automatic annotation of inaccessible tasks could be blocked"],
]
# Git URL of CVAT (a variable, for mirrors).
cvat_repo_url = "https://github.com/cvat-ai/cvat.git"
# Where CVAT is checked out on the host.
cvat_dir = "/opt/cvat"
# Name/address users type to reach CVAT (traefik routes on it); None: the host's primary IPv4 address.
cvat_host = None
# Host directory shared read-only into CVAT as /home/django/share.
share_path = "/mnt/share"
# Group that owns the share (mode 2775: members add data, new files inherit the group; never 777).
share_group = "labshare"
# CVAT services that get the share (only those present in the pinned docker-compose.yml are used).
cvat_share_services = ["cvat_server", "cvat_worker_import", "cvat_worker_export", "cvat_worker_annotation", "cvat_worker_chunks"]
# Start the stack, create the admin and deploy the functions (False: files only, e.g. in the test lab).
cvat_start = True
# Seconds to wait for CVAT's API (/api/server/about) before creating the admin or deploying functions.
cvat_api_timeout = 600
# Seconds an upgrade waits for the new release's API, i.e. for its migrations (CVAT's upgrade guide: "It can take
# time especially if you have a lot of data. Please do not terminate the migration"), before it rolls back.
cvat_upgrade_timeout = 3600
# Before an upgrade stops CVAT, check that every URL and package index the functions' rebuild fetches (read from their
# YAMLs and Dockerfiles at the new release: labforge/function_inputs.py) answers from the host. False: check only
# their images, for a lab whose builds reach those URLs another way (a proxy Docker's builds use but the host does not).
cvat_upgrade_check_build_downloads = True
# CVAT superuser created non-interactively; the password comes from $LABFORGE_CVAT_ADMIN_PASSWORD or
# from cvat_admin_password_file (a path on the control machine, outside this repository), never from here.
cvat_admin_user = "admin"
cvat_admin_email = "admin@cvat.lab"
cvat_admin_password_file = None

# --- Exposure: what the host answers on its network (docs/security.md; labforge/exposure.py) ----------------------
# Networks (CIDRs) allowed to reach CVAT's port(s): 8080, or 80 and 443 with TLS. Nothing else the stack or Nuclio
# publishes answers the network: the Nuclio dashboard is not published and a DOCKER-USER rule set drops everything
# else forwarded to Docker's networks from outside. Default: anyone who can reach the host over IPv4. IPv6
# networks (e.g. "2001:db8:10::/64") open CVAT over IPv6 to them; otherwise the host takes new IPv6 TCP connections
# on SSH's port only (docs/security.md).
cvat_allowed_networks = ["0.0.0.0/0"]
# The Nuclio dashboard (no authentication, holds the Docker socket: reaching it is root on the host) is not published.
# "127.0.0.1" publishes it on the host's loopback only, for `ssh -L 8070:127.0.0.1:8070 <host>` while debugging.
nuclio_dashboard_publish = None
# TLS for CVAT: "off" (plain HTTP on 8080), "own" (cvat_tls_cert_file + cvat_tls_key_file, PEM files on the control
# machine, outside this repository) or "lab-ca" (labforge keeps a lab CA in cvat_tls_lab_ca_dir on the control machine;
# each host gets an issuer constrained to its cvat_host, from which a daily timer there renews CVAT's certificate;
# users import <dir>/ca.crt once). With TLS, 443 serves CVAT and 80 redirects.
cvat_tls = "off"
cvat_tls_cert_file = None
cvat_tls_key_file = None
# The lab CA's directory on the control machine (relative paths: relative to this repository; one inside it that git
# does not ignore is refused).
cvat_tls_lab_ca_dir = "lab-ca"
# The names and addresses a new lab CA may sign for (its name constraints): DNS names (each covers the names under
# it) and IP addresses or networks, e.g. ["lab.example", "192.168.10.0/24"]. None: the cvat_host of the host that
# makes it. A host whose cvat_host an existing CA may not sign for is refused with one line.
cvat_tls_lab_ca_names = None
# lab-ca: CVAT's certificate (valid 90 days) is issued anew on the host when fewer days than this are left (1-89).
cvat_tls_renew_days = 30

# --- A split lab (labforge/split.py, docs/settings.md "A split lab") ------------------------------
# "all": CVAT and its functions on this host. "inference": this host runs only Docker (and the NVIDIA layers on a
# GPU host), nuctl, the Nuclio dashboard and the functions, for the one CVAT host that names it.
lab_role = "all"
# On a CVAT host: the name (in the hosts file) of the inference host that runs its Nuclio dashboard and functions;
# None: its own. One host only: CVAT talks to a single Nuclio endpoint (docs/kubernetes.md for more).
inference_host = None
# The address the other host of a split lab reaches this one at (the network they share); None: its SSH address
# (`host:` in the hosts file). The CVAT host's must be an IPv4 address: the inference host's firewall lets it in.
lab_address = None
# Set by the hosts file loader, never by hand: the inference host's address on its CVAT host, and the CVAT host's
# address on its inference host (the one address its dashboard answers).
inference_address = None
cvat_address = None
inference_for = None  # on an inference host: the name of the CVAT host it serves

# --- Nuclio functions ------------------------------------------------------------------------
# Functions deployed on every host: paths in the CVAT checkout (serverless/...) or in this repo (files/...).
nuclio_functions = ["serverless/openvino/omz/public/yolo-v3-tf", "serverless/openvino/dextr"]
# CVAT functions that CVAT removed after a tag -> that tag: once cvat_version is newer, they are built from that
# tag's tree (git archive of the checkout's objects, under /opt/labforge/functions/cvat-<tag>). CVAT deleted
# serverless/openvino/dextr and serverless/openvino/omz/public/yolo-v3-tf at v2.52.0 (commit 826d205f1, #10091);
# v2.73.0's lambda manager still sends a detector {image, threshold} and an interactor {image, pos_points,
# neg_points, obj_bbox} and passes their answers on (cvat/apps/lambda_manager/views.py at 7972cb4f2), so the
# seed's detector and DEXTR keep working there (docs/compatibility.md says where they do not: ROI requests).
cvat_function_sources = {"serverless/openvino/dextr": "v2.51.0", "serverless/openvino/omz/public/yolo-v3-tf": "v2.51.0"}
# Environment CVAT's serverless/deploy_{cpu,gpu}.sh pass to every function at v2.51.0.
nuclio_function_env = {"CVAT_FUNCTIONS_REDIS_HOST": "cvat_redis_ondisk", "CVAT_FUNCTIONS_REDIS_PORT": "6666"}
# Memory limit per function container (nuctl deploy --resource-limit memory=<quantity>: Docker's --memory, so a
# request that grows a function past it kills that container's process, restarted by its restartPolicy, not
# whatever the host's OOM killer picks, such as Postgres). Every CVAT function deployed needs an entry (the
# deploy refuses one without: CVAT's YAMLs set none and are not edited); ours (files/nuclio/...) set theirs in
# their YAMLs (the measured reasons are there), which an entry here overrides. Changing a value redeploys.
# Estimates, not measured here (no Docker host with these images): YOLOv3 (OpenVINO, FP32 IR of 62 M
# parameters, ~250 MB) and DEXTR (OpenVINO, ResNet-101, ~230 MB) stay well under 1 GiB; CVAT's SAM ViT-H loads
# its 2.56 GB checkpoint next to a model of the same size (segment_anything's build_sam: ~5.1 GB before the
# weights move to the GPU), and on the CPU runs ViT-H's global attention on top of its 2.56 GB of weights.
nuclio_function_memory_limit = {
    "serverless/openvino/omz/public/yolo-v3-tf": "2Gi",
    "serverless/openvino/dextr": "2Gi",
    "serverless/pytorch/facebookresearch/sam": "8Gi",
}
# Host port per function (its Nuclio HTTP trigger's attributes.port, written into a copy of its configuration on the
# host: labforge/function_config.py). Nuclio alone reuses a function's previous port or takes a random one, and Docker
# hands random ports out of the kernel's ephemeral range (32768-60999 by default) again at every boot, so after a
# reboot one function could take another's port and leave it in `error` (cvat-ai/cvat#10307). These sit just below
# that range, where Docker never picks one; every function deployed needs its own (the deploy refuses a missing one,
# one inside the host's ip_local_port_range, one given twice, or CVAT's or the dashboard's). Changing one redeploys.
nuclio_function_ports = {
    "serverless/openvino/omz/public/yolo-v3-tf": 32701,
    "serverless/openvino/dextr": 32702,
    "serverless/pytorch/facebookresearch/sam": 32703,
    "files/nuclio/sam2": 32704,
    "files/nuclio/sam2-tracker": 32705,
}

# --- Backups (pyinfra inventory.py backup.py / restore.py; docs/backups-and-upgrades.md) --------------------------
# On the host, backups are restic snapshots in a restic repository (deduplicated, compressed from restic 0.14,
# checked after each backup), made by labforge-data (labforge/data_program.py) under one lock with restores and
# upgrades. backup_dir holds the repository unless backup_repository names another; root only (0700).
backup_dir = "/var/backups/labforge"
# A restic repository string for the backups instead of <backup_dir>/repository: a path on the host, or anything
# restic reaches without more settings (e.g. "sftp:backup@nas:/srv/labforge"; restic's own SSH config applies).
backup_repository = None
# A file on the control machine (outside the repository, mode 0600) of NAME=VALUE lines: the credentials restic reads
# for backup_repository's backend (e.g. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for s3:...). Checked while
# planning, put on the host root-only (/etc/labforge/backup/repository.env) and given to restic in its environment only.
backup_repository_env_file = None
# A file on the control machine (outside the repository, mode 0600) that keeps the repository's password, without which
# no backup can be read: fetched from the host when missing, made there and put on the host when neither has one, put
# on a host that has none, and refused when it differs from the host's. `{host}` is the host's inventory name.
backup_password_file = None
# restic from the distro's archive (apt verifies it), at this upstream version per release, held. Ubuntu 22.04's
# restic 0.12.1 cannot compress and has no --dry-run (the space estimate then counts the volumes' whole size).
restic_versions = {"bookworm": "0.14.0", "jammy": "0.12.1", "noble": "0.16.4"}
# How many regular backups (manual and scheduled) stay; safety backups (before a restore, an upgrade, a rollback) are
# counted apart, with the same number. Never removed: the backup being restored, the newest one, the newest of each
# CVAT release, and any an unfinished upgrade depends on.
backup_keep = 7
# Bytes that must stay free on the repository's disk after a backup (and on Docker's after a restore is unpacked):
# a disk shared with Docker never fills under PostgreSQL. A backup or restore that would go below is refused before
# anything stops.
backup_reserve_bytes = 2 * 2**30
# After each backup restic checks the repository, and reads back 1/N of its data (a different part each day: all of
# it every N days). 0: the structure only.
backup_check_read_parts = 7
# A directory on the control machine: after each backup.py run the repository's new files are copied there
# (<dir>/<host>/repository, 0600 files in 0700 directories) and each checked against its name (restic names every
# data, index and snapshot file by the sha256 of its content). A relative path is under the repository and must be
# git-ignored. None: no copy.
backup_fetch_dir = None
# A systemd OnCalendar= value (e.g. "daily", "Mon..Fri 02:00") for the timer that runs the same backup. On by
# default; None turns the timer off (and removes it).
backup_schedule = "daily"
# restore.py: the backup to restore (a name from `labforge-data list`); None: the newest.
restore_backup = None
