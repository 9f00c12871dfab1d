"""Hide exactly TensorFlow's CUDA-stub start-up lines on CPU machines; nothing else.

    import runtime          # installs the import hook (runtime/__init__.py calls install())
    import tensorflow       # the known lines are dropped, any other stderr output is kept

    horovodrun -np 2 python -m chexnet.train ... 2> >(python -m runtime.stderr_filter >&2)  # a launcher's

TensorFlow's Linux wheels (``tensorflow`` and ``tensorflow-cpu`` 2.18.1 alike)
register their CUDA plugins at import and, on a machine without CUDA, print
"Unable to register cuDNN/cuBLAS/cuFFT factory" from C++ before logging is set
up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them. The hook sends file
descriptor 2 to a temporary file while ``tensorflow`` is first imported, then
writes back every captured line that is not one of ``KNOWN_LINES``.
``python -m runtime.stderr_filter`` applies the same filter to its standard input, for
processes that import TensorFlow outside this project (``horovodrun`` does).
"""
import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

KNOWN_LINES = re.compile(
    r"Unable to register cu(?:DNN|BLAS|FFT) factory: Attempting to register factory for plugin "
    r"cu(?:DNN|BLAS|FFT) when one has already been registered"
    r"|^(?:\[[0-9,]+\]<stderr>:)?WARNING: All log messages before absl::InitializeLog\(\) is called "
    r"are written to STDERR$")


def is_known(line):
    """True for one of TensorFlow's CUDA-stub lines (with or without an mpirun tag)."""
    return bool(KNOWN_LINES.search(line.rstrip("\r\n")))


@contextlib.contextmanager
def filtered_stderr():
    """While inside, fd 2 goes to a temporary file; on exit its lines are written back, known ones dropped."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture if not is_known(line.decode(errors="replace"))]
            if kept:
                os.write(2, b"".join(kept))


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Wraps the first import of ``tensorflow`` in ``filtered_stderr``; removes itself after."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        real_exec = spec.loader.exec_module

        def exec_module(module):
            with filtered_stderr():
                real_exec(module)

        spec.loader.exec_module = exec_module
        return spec


def install():
    """Filter the next first import of TensorFlow in this process (no-op if already imported)."""
    if os.environ.get("MEDIMG_SHOW_TF_STARTUP") == "1" or "tensorflow" in sys.modules:
        return
    if not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def main():
    """stdin -> stdout without the known lines, line by line (a pipe filter for launchers)."""
    for line in sys.stdin:
        if not is_known(line):
            sys.stdout.write(line)
            sys.stdout.flush()
