"""Optional TensorBoard mirror of the metrics (`--tensorboard`); metrics.jsonl stays the record."""
import importlib.util


class TensorBoardWriter:
    def __init__(self, log_dir):
        self.check_available()
        from torch.utils.tensorboard import SummaryWriter
        self._writer = SummaryWriter(str(log_dir))

    @staticmethod
    def check_available():
        if importlib.util.find_spec("tensorboard") is None:  # an optional extra
            from harness.config import ConfigError
            raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard")

    def write(self, step, scalars):
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self):
        self._writer.close()
