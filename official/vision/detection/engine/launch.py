"""Run a worker on one device in this process, or on many through MegEngine's launcher."""
import megengine as mge
import megengine.distributed as dist

from ..errors import ConfigError


def world_info():
    """(world_size, rank) of the calling process."""
    if dist.is_distributed():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def launch(worker, args, num_devices=1, num_machines=1, machine_rank=0, master_ip="localhost",
           port=0):
    """Call ``worker(*args)`` on every device of every machine.

    One device on one machine runs in the current process. Otherwise
    ``megengine.distributed.launcher`` starts one process per local GPU; machine k hosts ranks
    k * num_devices ... and machine 0 runs the rendezvous server at master_ip:port.
    """
    world_size = num_devices * num_machines
    if world_size == 1:
        return worker(*args)
    visible = mge.get_device_count("gpu")
    if visible < num_devices:
        raise ConfigError(
            "{} devices requested but {} GPU(s) are visible; MegEngine's distributed backend "
            "needs one GPU per process (use -n 1 on a CPU)".format(num_devices, visible))
    if num_machines > 1 and port == 0:
        raise ConfigError("multi-machine training needs a fixed --port on every machine")
    if not 0 <= machine_rank < num_machines:
        raise ConfigError("--machine-rank must be in [0, {})".format(num_machines))
    return dist.launcher(
        worker, n_gpus=num_devices, world_size=world_size,
        rank_start=machine_rank * num_devices, master_ip=master_ip, port=port,
    )(*args)
