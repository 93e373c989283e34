"""The figure of bench_weight_sharing.py: inherited against standalone loss, and the two
mixer ablations as heat maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_plot(path: Path, summary: dict, family: set[str], tau: float) -> None:
    """Inherited vs standalone loss (with the 3% band), and the two mixer ablations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["inherited"])
    inh = np.array([summary["inherited"][n] for n in names])
    alone = np.array([summary["standalone_same_tokens"][n] for n in names])
    fig, (ax, *heat) = plt.subplots(
        1, 3, figsize=(16, 5.5), gridspec_kw={"width_ratios": [1.4, 1, 1]}
    )
    few = summary.get("few_shot")
    few_xy = (
        np.array([[summary["standalone_all_tokens"][n], few["loss"][n]] for n in names])
        if few
        else np.empty((0, 2))
    )
    values = np.concatenate([inh, alone, few_xy.ravel()])
    lo, hi = values.min() - 0.05, values.max() + 0.05
    grid = np.linspace(lo, hi, 2)
    ax.fill_between(grid, grid * 0.97, grid * 1.03, color="tab:green", alpha=0.15, label="±3%")
    ax.plot(grid, grid, color="tab:green", lw=1)
    for name, x, y in zip(names, alone, inh, strict=True):
        ax.scatter(x, y, color="tab:red" if name in family else "tab:blue", zorder=3)
        ax.annotate(
            name + ("*" if name in family else ""),
            (x, y),
            fontsize=8,
            xytext=(4, 2),
            textcoords="offset points",
        )
    if few:
        ax.scatter(
            *few_xy.T,
            color="tab:orange",
            marker="^",
            zorder=3,
            label=f"few-shot (layers {few['layers']}) vs standalone@all "
            f"(τ {few['kendall_tau_all_tokens']['all'][0]:.2f})",
        )
    ax.set(
        xlabel="standalone, same tokens (nats/token)",
        ylabel="inherited (nats/token)",
        title=f"weight sharing vs standalone (Kendall τ {tau:.2f}; * family)",
    )
    ax.legend(loc="upper left")
    for axis, key, title in zip(
        heat,
        ("mixer_ablation", "mixer_ablation_standalone"),
        ("inherited weights", "standalone models"),
        strict=True,
    ):
        depth = max(len(v or []) for v in summary[key].values())
        table = np.full((len(names), depth), np.nan)
        for i, name in enumerate(names):
            for j, change in enumerate(summary[key].get(name) or []):
                table[i, j] = np.nan if change is None else 100 * change
        image = axis.imshow(table, cmap="viridis", vmin=0, vmax=60, aspect="auto")
        axis.set_xticks(range(depth), [f"layer {j}" for j in range(depth)])
        axis.set_yticks(range(len(names)), names if axis is heat[0] else [], fontsize=8)
        axis.set_title(f"loss rise (%) without the mixer\n{title}", fontsize=9)
        for (i, j), value in np.ndenumerate(table):
            if not np.isnan(value):
                axis.text(
                    j,
                    i,
                    f"{value:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value < 30 else "black",
                )
    fig.colorbar(image, ax=heat, shrink=0.8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
