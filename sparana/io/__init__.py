"""Files: the checkpoint format, the ModelSaver, job results; every file is written atomically."""

from ._checkpoint import Checkpoint, CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from ._results import Results
from ._saver import ModelSaver
