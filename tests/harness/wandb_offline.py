"""Read a Weights & Biases offline run (<dir>/wandb/offline-run-*/run-<id>.wandb) without wandb's
servers: the file is a LevelDB-style log (7-byte header, 32 KiB blocks of checksummed chunks)
whose records are wandb's `Record` protobufs."""
import json
import struct

BLOCK = 32 * 1024
HEADER = 7  # ':W&B', magic, version
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path):
    from wandb.proto import wandb_internal_pb2
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending = HEADER, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a chunk header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def read_offline_run(run_dir):
    """(config {key: value}, history [{key: value}, ...]) of the one offline run under run_dir/wandb."""
    paths = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(paths) == 1, f"expected one offline run, found {paths}"
    config, history = {}, []
    for record in records(paths[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
    return config, history
