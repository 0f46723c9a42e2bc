"""The charts of bench/results.md, from what the sections measured.
"""

import os

from harness import CHART_DATA, ratio


def write_charts(output):
    """PNG charts next to the results file: contention.png (the wait-time distribution under
    contention) and cost.png (per-variant cost against the built-ins), with -quick before .png
    in quick mode. Needs matplotlib (bench/run.sh installs it into the bench venv)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = os.path.dirname(os.path.abspath(output))
    suffix = "-quick" if output.endswith("-quick.md") else ""
    written = []

    contended = CHART_DATA["contended"]
    if contended:
        clients = max(contended)
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for name, latencies in contended[clients].items():
            values = sorted(latencies)
            if not values:
                continue
            ys = [(i + 1) / len(values) for i in range(len(values))]
            ax.plot(values, ys, label=name, linewidth=1.6)
        ax.set_xscale("log")
        ax.set_xlabel("lock + unlock, wait included (ms, log scale)")
        ax.set_ylabel("fraction of acquisitions")
        ax.set_title(f"One contended lock, {clients} clients: how long each acquisition took")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        path = os.path.join(base, f"contention{suffix}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    in_server = CHART_DATA["in_server"]
    uncontended = CHART_DATA["uncontended"].get("prepared")
    if in_server and uncontended:
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
        builtin = in_server["builtin"]
        names = [v for v in in_server["plain"] if v != builtin]
        speed = [ratio(in_server["plain"][builtin], in_server["plain"][v]) for v in names]
        speed_pre = [ratio(in_server["preloaded"][builtin], in_server["preloaded"][v])
                     for v in names]
        ys = range(len(names))
        left.barh([y + 0.2 for y in ys], speed, height=0.4, label="not preloaded")
        left.barh([y - 0.2 for y in ys], speed_pre, height=0.4, label="preloaded")
        left.set_yticks(list(ys), [n.replace(" (repeated)", "\n(repeated)") for n in names],
                        fontsize=7)
        left.axvline(1.0, color="black", linewidth=0.8)
        left.set_xlabel("× the integer built-in's speed (1.0 = same price)")
        left.set_title("In-server: lock + unlock inside one statement", fontsize=10)
        left.legend(fontsize=8)
        reference, per_clients = uncontended
        counts = sorted(per_clients)
        variants = [v for v in per_clients[counts[0]] if v != reference]
        for v in variants:
            right.plot(counts, [ratio(per_clients[c][v], per_clients[c][reference])
                                for c in counts], marker="o", label=v)
        right.axhline(1.0, color="black", linewidth=0.8)
        right.set_xscale("log", base=2)
        right.set_xticks(counts, [str(c) for c in counts])
        right.set_xlabel("pgbench clients")
        right.set_ylabel(f"TPS × {reference}")
        right.set_title("Through pgbench: uncontended lock + unlock (prepared)", fontsize=10)
        right.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(base, f"cost{suffix}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
