"""Training and test error against iterations, as in He et al. 2015's Figures 4 and 6:
thin dashed lines the training error, bold lines the test error (dotted: of the weights'
EMA, where a run keeps one), one colour per run, or per group of runs that differ only in
their seed (their mean, with a band from the lowest to the highest seed's error)."""

import textwrap

import matplotlib

matplotlib.use('Agg')  # Files only; no display needed.
import matplotlib.pyplot as plt  # noqa: E402

from resnet_jax.analysis import report  # noqa: E402


def _settings(overrides: dict[str, str], hidden=()) -> str:
  shown = [(k.rsplit('.', 1)[-1], v) for k, v in overrides.items() if k not in hidden]
  return ', '.join(f'{k}={v}' for k, v in shown)


# About how many characters of a title fit across one 6-inch panel at matplotlib's default size.
_TITLE_CHARACTERS_PER_PANEL = 60


def _top(results: list[report.RunResult]) -> float:
  """An upper limit that shows the second half of the curves (the start is ~90% error)."""
  tail = [e for r in results for c in (r.train_curve, r.test_curve) for _, e in c[len(c) // 2 :]]
  return min(100.0, 1.3 * max(tail, default=100.0))


def _plot_spread(ax, curves: list[list[tuple[int, float]]], style, color, width, label):
  """One curve, or the mean of several at the steps they all logged, and their min-max band."""
  curves = [dict(c) for c in curves if c]
  if not curves:
    return
  steps = sorted(set.intersection(*(set(c) for c in curves)))
  values = [[c[s] for c in curves] for s in steps]
  means = [sum(v) / len(v) for v in values]
  ax.plot(steps, means, style, color=color, linewidth=width, label=label)
  if len(curves) > 1:
    lows, highs = zip(*((min(v), max(v)) for v in values), strict=True)
    ax.fill_between(steps, lows, highs, color=color, alpha=0.2, linewidth=0)


def plot_curves(
  results: list[report.RunResult], path, *, panel_by: str | None = None, title: str = ''
):
  """Writes a PNG; with `panel_by` (a grid key), one panel per value of that key."""
  shared = report.shared_settings(results)
  if shared:
    title = f'{title} ({_settings(shared)})' if title else _settings(shared)
  panels = {}
  for r in results:
    panels.setdefault(r.overrides.get(panel_by, '') if panel_by else '', []).append(r)
  title = textwrap.fill(title, _TITLE_CHARACTERS_PER_PANEL * len(panels))  # Not cut off.
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
  for ax, (value, group) in zip(axes[0], panels.items(), strict=True):
    for i, runs in enumerate(report.seed_groups(group)):
      color = f'C{i}'
      label = _settings(runs[0].overrides, {*shared, panel_by, report.SEED_KEY})
      started = [r for r in runs if r.steps] or runs[:1]
      if len(started) > 1:
        label = ', '.join(filter(None, [label, f'{len(started)} seeds']))
      label = label or runs[0].name
      _plot_spread(ax, [r.train_curve for r in runs], '--', color, 1, f'{label} (train)')
      _plot_spread(ax, [r.test_curve for r in runs], 'o-', color, 2.5, f'{label} (test)')
      _plot_spread(ax, [r.ema_test_curve for r in runs], 's:', color, 1.5, f'{label} (EMA test)')
    ax.set_ylim(0, _top(results))  # One scale for all panels, to compare them.
    ax.set_xlabel('iterations')
    ax.set_ylabel('error (%)')
    ax.set_title(f'{panel_by}={value}' if panel_by else title)
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize=8)
  if panel_by and title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
