"""Plots of simulated episodes (matplotlib, headless Agg backend)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def save_plot(result, path: Path) -> None:
    """Top-down (x, y) plot of one episode (`EpisodeResult`): drone path, start, target(s), distractors;
    written as a PNG to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec, m = result.spec, result.metrics
    fig, ax = plt.subplots(figsize=(6, 6))
    for d in spec.distractors:
        ax.plot(d.position[0], d.position[1], "s", color=d.colour, markersize=6, markeredgecolor="k", label=None)
    if spec.chase_path is not None:
        ax.plot(result.targets[:, 0], result.targets[:, 1], "--", color="tab:red", lw=1, label="target path")
    targets = np.array(spec.targets)
    ax.plot(targets[:, 0], targets[:, 1], "o", color=spec.target_colour, markersize=10, markeredgecolor="k",
            label="target(s)")
    for i, t in enumerate(targets if spec.task == "target_loop" else []):
        ax.annotate(str(i + 1), t[:2], textcoords="offset points", xytext=(6, 6))
    ax.plot(result.positions[:, 0], result.positions[:, 1], "-", color="tab:blue", lw=1.5, label="drone")
    x0, y0, _ = spec.start_position
    ax.plot(x0, y0, "^", color="tab:green", markersize=10, label="start")
    ax.arrow(x0, y0, 0.8 * math.cos(spec.start_yaw_rad), 0.8 * math.sin(spec.start_yaw_rad), width=0.05,
             color="tab:green")
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title(f"{spec.scenario} seed {spec.seed}: {m['reason']}")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
