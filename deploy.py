"""labforge: the layers, in the order they are applied. Each layer lives in tasks/<layer>.py."""

from tasks.backups import backup_layer
from tasks.base import base
from tasks.cuda import cuda
from tasks.cvat import cvat
from tasks.docker import docker
from tasks.exposure import exposure_layer
from tasks.functions import functions
from tasks.inference import inference_layer
from tasks.nuclio import nuclio
from tasks.nvidia import container_toolkit, driver
from tasks.preflight import preflight

preflight()  # refuse unsupported hosts before anything changes
base()
docker()
cuda()  # GPU hosts only; before the driver: Debian's 550 driver comes from the CUDA repo
driver()  # GPU hosts only
container_toolkit()  # GPU hosts only
nuclio()
exposure_layer()  # the firewall rules for what Docker publishes, before the stack starts
inference_layer()  # a split lab's inference host: the Nuclio dashboard, before its CVAT host's stack starts
cvat()  # checkout, share, override, compose up, admin
functions()  # Nuclio functions for the host's group
backup_layer()  # the backup timer (backup_schedule: daily unless None); labforge-data comes with the CVAT layer
