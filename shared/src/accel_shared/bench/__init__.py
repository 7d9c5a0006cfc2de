"""Benchmark harness: timing, machine description, reports."""

from accel_shared.bench.machine import describe_machine, machine_summary
from accel_shared.bench.memory import peak_rss_mib
from accel_shared.bench.report import BenchmarkReport, compose_page, ratio
from accel_shared.bench.stats import PairedDifference, paired_difference
from accel_shared.bench.timing import Timing, time_callable

__all__ = [
    "BenchmarkReport",
    "PairedDifference",
    "Timing",
    "compose_page",
    "describe_machine",
    "machine_summary",
    "paired_difference",
    "peak_rss_mib",
    "ratio",
    "time_callable",
]
