"""The one timing rule every benchmark here uses."""

import statistics
import time


def median_step_seconds(run_step, steps: int, warmup: int = 2) -> float:
  """Median seconds per call of `run_step` (which must block until done), after warm-up."""
  for _ in range(warmup):
    run_step()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    run_step()
    times.append(time.perf_counter() - start)
  return statistics.median(times)
