"""Where things are: our binary, and the benchmark peers scripts/setup-peers builds."""

import os
import platform
import re

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


def llama_cpu_flags():
    """The C/C++ flags our llama.cpp is built with beside -march (.cargo/config.toml: no AMX
    kernels on x86-64), for builds of llama.cpp that run CMake themselves."""
    if platform.machine() != "x86_64":
        return ""
    with open(os.path.join(ROOT, ".cargo", "config.toml"), encoding="utf-8") as f:
        found = re.search(r'^CXXFLAGS_x86_64_unknown_linux_gnu = "(.*)"$', f.read(), re.M)
    if not found:
        raise RuntimeError(".cargo/config.toml has no CXXFLAGS_x86_64_unknown_linux_gnu")
    return found.group(1)
