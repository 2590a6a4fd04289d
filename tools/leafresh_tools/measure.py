"""Figures from runs: medians, run-to-run spreads, ratios, their formatting; calls started at
once."""

import statistics
import threading
import time


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values):
    """Run-to-run spread of a figure: half the range between its quartiles, relative to the median
    (0.05 means the middle half of the runs lies within +-5%); None with fewer than 3 runs."""
    values = sorted(v for v in values if v is not None)
    if len(values) < 3:
        return None
    q = statistics.quantiles(values, n=4, method="inclusive")
    mid = statistics.median(values)
    return (q[2] - q[0]) / 2 / mid if mid else None


def ratio(a, b):
    return a / b if a is not None and b else None


def f2(v, d=2):
    return "n/a" if v is None else f"{v:.{d}f}"


def at_once(calls):
    """Runs the calls (functions of no argument) each on its own thread, released together;
    returns (their results in order, wall seconds from the release until the last returned)."""
    results = [None] * len(calls)
    barrier = threading.Barrier(len(calls) + 1)

    def worker(i):
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(calls))]
    for th in threads:
        th.start()
    barrier.wait()
    started = time.monotonic()
    for th in threads:
        th.join()
    return results, time.monotonic() - started
