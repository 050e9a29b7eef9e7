"""`vaitrain bench`: training and inference throughput, step-time spread, peak memory, FLOPs and
the data path of vaitrain's models, optionally side by side with a baseline (torchvision's
network, or the same network in a bare loop). See harness.py for how it times."""
from vaitrain.bench.report import notes, tables, write_out
from vaitrain.bench.run import BenchReport, run_bench

__all__ = ["run_bench", "BenchReport", "write_out", "tables", "notes"]
