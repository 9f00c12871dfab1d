"""Rank-aware logging: rank 0 logs at INFO, the other ranks only warnings.

    from runtime.logs import setup_logging
    log = setup_logging(rank=0, name="chexnet")
    log.info("only rank 0 prints this")
"""
import logging
import os
import sys


def setup_logging(rank, name="train"):
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    root = logging.getLogger()
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    # Other ranks would repeat rank 0's lines; they still report problems.
    root.setLevel(level if rank == 0 else logging.WARNING)
    # TensorFlow's Python logger repeats deprecation notices on every rank.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return logging.getLogger(name)
