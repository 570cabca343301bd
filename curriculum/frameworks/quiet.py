"""Importing TensorFlow without its start-up chatter in every Keras stage's log.

TensorFlow 2.21 logs through absl before absl is initialised, so ``TF_CPP_MIN_LOG_LEVEL``
cannot silence two lines it prints to the process's stderr at import ("All log messages before
absl::InitializeLog() ..." and "oneDNN custom operations are on ..."). The import runs with
file descriptor 2 captured; every other line it wrote is passed on, in order.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from types import ModuleType

STARTUP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|port\.cc:\d+\] oneDNN custom operations are on"
)


def import_tensorflow() -> ModuleType:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # INFO and WARNING off; errors still shown
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            passed_on = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                         if not STARTUP_NOISE.search(line)]
            sys.stderr.write("".join(passed_on))
            sys.stderr.flush()
    return tensorflow
