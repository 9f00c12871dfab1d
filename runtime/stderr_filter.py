"""A pipe filter: standard input to standard output without TensorFlow's CUDA-stub lines.

    horovodrun -np 2 python -m chexnet.train ... 2> >(python -m runtime.stderr_filter >&2)

For launchers that import TensorFlow themselves (``horovodrun`` does), where
the import hook of ``runtime.quiet`` cannot act. Every other line passes.
"""
from runtime.quiet import main

if __name__ == "__main__":
    main()
