"""A warm start for the suite's `milimo render` runs: one process per test worker that has imported the machine
learning stack (torch, diffusers' and transformers' model classes, peft: ~9 s of a render process here, paid ~70
times a suite) and forks a child for each run, which then starts exactly as `python -m flows.cli ARGS` does.

Nothing of milimo's is imported before the fork, and neither is Prefect: every module of ours, every setting and
every `MILIMO_*` / `PREFECT_*` variable is read fresh in the child, in its own environment and working folder, so
what a test sees of the command is what a user's fresh process does. The child exits through the interpreter's own
shutdown (atexit handlers, non-daemon threads joined), its output goes to the files the caller reads, and its exit
status is the caller's `returncode` (a signal as its negative number, as `subprocess` reports it). A run whose
environment differs in what the preloaded libraries read at import time (`HF_*`, `TORCH*`, `OMP_*`, ...) starts
cold instead. The server is single-threaded, so each fork copies a process with no other thread in it.

    python tests/warm_start.py SOCKET      # the server; conftest starts it per worker at the first render
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys

# What a render imports of the libraries below, by the names the engine uses, so the lazy module loaders of
# diffusers and transformers have done their work before the fork.
PRELOAD = """
import torch, numpy, safetensors.torch, einops, PIL.Image
import transformers, peft
from transformers import Gemma3ForConditionalGeneration, GemmaTokenizerFast, Gemma3Config
import diffusers
from diffusers import (AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler,
                       LTX2VideoTransformer3DModel)
from diffusers.pipelines.ltx2 import LTX2LatentUpsamplerModel, LTX2TextConnectors, LTX2Vocoder
"""

# Variables the preloaded libraries read when they are imported: a run that sets any of them differently from the
# server's environment starts cold.
IMPORT_TIME_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "DIFFUSERS_", "TORCH", "PYTORCH_", "OMP_", "MKL_",
                        "CUDA_", "NVIDIA_", "TOKENIZERS_", "PYTHON", "LD_", "KMP_")


def preloaded_environment_matches(env: dict[str, str], server_env: dict[str, str]) -> bool:
    def read_at_import(e: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in e.items() if k.startswith(IMPORT_TIME_PREFIXES)}

    return read_at_import(env) == read_at_import(server_env)


def _child(request: dict, inherited: list) -> None:
    """Become `python -m flows.cli ARGS` in the request's folder and environment; never returns to the server."""
    for held in inherited:  # the server's sockets and selector
        held.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stdin = os.open(os.devnull, os.O_RDONLY)
    out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for fd, target in ((stdin, 0), (out, 1), (err, 2)):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["-m", *request["args"]]
    sys.path[0] = os.getcwd()  # as `python -m` puts it
    raise _RunModule()


class _RunModule(BaseException):
    """Unwinds the server's frames in the child, so `flows.cli` runs at the top as `python -m` runs it."""


def serve(path: str) -> None:
    exec(PRELOAD, {})
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    running: dict[int, socket.socket] = {}
    parent = os.getppid()
    print("ready", flush=True)
    while True:
        for _ready in selector.select(timeout=0.05):
            conn, _ = listener.accept()
            with conn.makefile("rb") as reader:
                request = json.loads(reader.readline())
            pid = os.fork()
            if pid == 0:
                _child(request, [selector, listener, conn, *running.values()])
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            running[pid] = conn
        for pid in list(running):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                conn = running.pop(pid)
                with conn:
                    conn.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
        if os.getppid() != parent:  # the test worker is gone
            return


def main() -> bool:
    """True in a child, which then runs the command with no server frame below it."""
    try:
        serve(sys.argv[1])
    except _RunModule:
        return True
    return False


if __name__ == "__main__" and main():
    import runpy

    runpy.run_module("flows.cli", run_name="__main__", alter_sys=True)
