"""The controller experiment (Table 3.10, Fig. 3.30): Alg. 2 for the proposal, the ViT AE and,
when `method.mnv3` lists the `cnn` codec, the MNV3 CNN baseline (its only knob is r).

For each pipeline (adaptive = "Proposal", static = "ViT AE"), training regime (noiseless = P,
robust = R), SNR scenario and threshold Gamma_th: the proxy table Lambda (training images, SNR
grid) and mean rho drive a simulation of Alg. 2 for every (V, mu) pair and run; the pair with
the best tail proxy accuracy among those meeting Gamma_th is deployed on the test stream, its
queue starting where the simulation left it (`warm_start`, a proposal: the thesis does not say).
"""

from __future__ import annotations

import itertools

import numpy as np

from thesis.semcom import figures
from thesis.semcom.lyapunov import deploy, draw_snr, nearest, select, simulate
from thesis.semcom.mobilenet_pipeline import LABELS as MNV3_LABELS

METHODS = {"adaptive": "Proposal", "vitae": "ViT AE"}
REGIMES = {"noiseless": "P", "robust": "R"}


def methods(ctx) -> dict[str, str]:
    """Proposal and ViT AE, plus MNV3 CNN (the thesis's controller baseline) when it is configured."""
    extra = {name.rsplit("_", 1)[0]: MNV3_LABELS[kind] for name, (kind, _) in ctx.mnv3_pipelines.items()
             if kind == "cnn"}
    return {**METHODS, **extra}


def controller_part(ctx) -> dict[str, object]:
    ctl = ctx.cfg.method.controller
    grid_snr = np.asarray(ctx.ev.snr_grid, dtype=float)
    pairs = list(itertools.product(ctl.V, ctl.mu))
    thresholds = [float(g) for g in ctl.thresholds]
    rows, traces = [], []
    for (method, label), (regime, column) in itertools.product(methods(ctx).items(), REGIMES.items()):
        pipeline = f"{method}_{regime}"
        proxy_grid, test_grid = ctx.grid(pipeline, "train"), ctx.grid(pipeline, "test")
        proxy, rho = proxy_grid.accuracy, proxy_grid.mean_rho
        scenarios = list(ctl.scenarios)
        rng = np.random.default_rng(ctx.cfg.seed)
        snr_runs = np.stack([[draw_snr(sc.mean, sc.std, ctl.slots, rng) for _ in range(ctl.runs)] for sc in scenarios])
        index = nearest(grid_snr, snr_runs.reshape(-1, ctl.slots))            # (scenarios * runs, T)
        copies = list(itertools.product(range(len(scenarios)), range(len(pairs)), range(len(thresholds)),
                                        range(ctl.runs)))
        position = {c: i for i, c in enumerate(copies)}
        v = np.array([pairs[p][0] for _, p, _, _ in copies], dtype=float)
        mu = np.array([pairs[p][1] for _, p, _, _ in copies], dtype=float)
        gam = np.array([thresholds[g] for _, _, g, _ in copies])
        sim = simulate(proxy, rho, index, v, mu, gam, ctl.tail, every=max(1, ctl.slots // 200),
                       trace_of=np.array([s * ctl.runs + r for s, _, _, r in copies]))
        shape = (len(scenarios), len(pairs), len(thresholds), ctl.runs)
        tail_rho, tail_acc = sim.tail_rho.reshape(shape).mean(-1), sim.tail_accuracy.reshape(shape).mean(-1)
        for s, scenario in enumerate(scenarios):
            for g, gamma in enumerate(thresholds):
                best = select(tail_rho[s, :, g], tail_acc[s, :, g], gamma)
                row = {"scenario": scenario.name, "gamma_th": gamma, "method": label, "regime": column,
                       "feasible": best is not None, "V": np.nan, "mu": np.nan, "accuracy": np.nan,
                       "avg_rho": np.nan, "proxy_accuracy": np.nan, "proxy_tail_rho": np.nan}
                if best is not None:
                    deployed = []
                    for run in range(ctl.runs):
                        c = position[(s, best, g, run)]
                        slots = ctl.deploy_slots or len(test_grid.rho)
                        drng = np.random.default_rng([ctx.cfg.seed, s, g, run, 1])
                        samples = drng.permutation(np.resize(np.arange(len(test_grid.rho)), slots))
                        trace = draw_snr(scenario.mean, scenario.std, slots, drng)
                        out = deploy(proxy, rho, test_grid.correct, test_grid.rho, grid_snr, trace, samples,
                                     pairs[best][0], pairs[best][1], gamma,
                                     float(sim.final_queue[c]) if ctl.warm_start else 0.0)
                        deployed.append(out)
                    row.update(V=pairs[best][0], mu=pairs[best][1],
                               accuracy=float(np.mean([d["accuracy"] for d in deployed])),
                               avg_rho=float(np.mean([d["avg_rho"] for d in deployed])),
                               proxy_accuracy=float(tail_acc[s, best, g]), proxy_tail_rho=float(tail_rho[s, best, g]))
                    c = position[(s, best, g, 0)]
                    traces += [{"scenario": scenario.name, "gamma_th": gamma, "method": label, "regime": column,
                                "t": int(t), "queue": float(q[c]), "avg_rho": float(a[c]),
                                "avg_proxy_accuracy": float(b[c])}
                               for t, q, a, b in zip(sim.trajectory["t"], sim.trajectory["queue"],
                                                     sim.trajectory["avg_rho"], sim.trajectory["avg_accuracy"])]
                rows.append(row)
    ctx.write("controller", rows)
    ctx.write("controller_trace", traces)
    figures.controller(rows, traces, ctx.run.path)
    feasible = [r for r in rows if r["feasible"]]
    return {"controller/feasible_cells": len(feasible), "controller/cells": len(rows),
            "controller/max_rho_over_gamma": float(max((r["avg_rho"] / r["gamma_th"] for r in feasible),
                                                       default=np.nan))}
