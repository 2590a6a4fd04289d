"""Where things are: our binary, and the benchmark peers scripts/setup-peers builds."""

import os

from . import ROOT

# LEAFRESH_BENCH_BIN: another build to measure (a copy, while cargo rebuilds target/release).
OURS_BIN = os.environ.get("LEAFRESH_BENCH_BIN") or os.path.join(ROOT, "target", "release", "leafresh-llm")
PEERS = os.path.join(ROOT, "target", "peers")


def peer_programs(peers=PEERS):
    """(llama-server, llama-bench, the venv's python with llama-cpp-python) under `peers`."""
    return (os.path.join(peers, "llama.cpp-build", "bin", "llama-server"),
            os.path.join(peers, "llama.cpp-build", "bin", "llama-bench"),
            os.path.join(peers, "venv", "bin", "python"))


LLAMA_SERVER, LLAMA_BENCH, VENV_PY = peer_programs()
