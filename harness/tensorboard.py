"""Optional TensorBoard mirror of the metrics (`--tensorboard`); metrics.jsonl stays the record."""


class TensorBoardWriter:
    def __init__(self, log_dir):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:  # tensorboard is an optional extra
            raise RuntimeError("--tensorboard needs the tensorboard package: pip install tensorboard") from error
        self._writer = SummaryWriter(str(log_dir))

    def write(self, step, scalars):
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self):
        self._writer.close()
