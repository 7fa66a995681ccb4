"""`facefactors info`: versions, device, threads."""

from __future__ import annotations

import platform

from rich.console import Console
from rich.table import Table


def info() -> None:
    """Print versions, the device `auto` resolves to, and thread counts."""
    import numpy
    import torch

    import facefactors
    from facefactors.utils.device import resolve_device

    table = Table(title="facefactors", show_header=False)
    table.add_row("facefactors", facefactors.__version__)
    table.add_row("python", platform.python_version())
    table.add_row("torch", torch.__version__)
    table.add_row("numpy", numpy.__version__)
    for mod in ("lightning", "kornia", "sklearn", "safetensors"):
        try:
            m = __import__(mod)
            table.add_row(mod, getattr(m, "__version__", "?"))
        except ImportError:
            table.add_row(mod, "not installed")
    device = resolve_device("auto")
    table.add_row("device (auto)", str(device))
    if device.type == "cuda":
        table.add_row("gpu", torch.cuda.get_device_name(device))
    table.add_row("torch threads", str(torch.get_num_threads()))
    table.add_row("interop threads", str(torch.get_num_interop_threads()))
    table.add_row("cpu", platform.processor() or platform.machine())
    Console().print(table)
