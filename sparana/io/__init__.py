"""Files: one safe checkpoint format, the ModelSaver, job results; every file is written atomically.

    _atomic       the one atomic writer (checkpoints, results, plots and the data cache use it)
    _safetensors  safetensors files: format and version, JSON header entries, tensor checks
    _header       a checkpoint header's fields checked one by one
    _description  a model as plain data (architecture + host tensors) and back
    _checkpoint   save_checkpoint / read_checkpoint / load_checkpoint and Checkpoint
    _saver        ModelSaver: snapshots, transfer, selected parameters, files
    _results      Results: a job's JSON figures and PNG plots
"""

from ._checkpoint import Checkpoint, load_checkpoint, read_checkpoint, save_checkpoint
from ._results import Results
from ._safetensors import CheckpointError
from ._saver import ModelSaver

__all__ = ["Checkpoint", "CheckpointError", "ModelSaver", "Results", "load_checkpoint", "read_checkpoint",
           "save_checkpoint"]
