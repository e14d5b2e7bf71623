"""How far the time split's features can take a ranker on Complete Journey: the shipped ranker
against rankers that also learn from the evaluated window itself.

    .venv/bin/python benchmarks/recommender_ceiling.py
    # writes benchmarks/results/recommender_ceiling.json

The shipped ranker learns on the three 28-day windows before the evaluated one. If the time
split's shortfall came from those windows differing from the evaluated one, a ranker that learns
from the evaluated window would close it. Three rankers, the same candidate rows and features:

1. `shipped`: learned on the earlier windows (what `benchmarks/recommender.py` scores);
2. `cross_fit`: the evaluated households in FOLDS folds; each fold is ranked by a ranker learned
   on the other folds' labels of the evaluated window plus the earlier windows, so every
   household is scored by a ranker that never saw its own purchases;
3. `in_sample`: learned on all of the evaluated window's labels and scored on them; it has seen
   the answers, so it shows how much of its lead is memorised, not a figure to reach.

It works in the default workspace (data/, mlruns/), like `benchmarks/recommender.py`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.contract import CUSTOMER_ID  # noqa: E402
from pipelines import steps  # noqa: E402
from training.candidates import build_history  # noqa: E402
from training.evaluation import score_table_row, split  # noqa: E402
from training.ranker import CandidatePool  # noqa: E402
from training.recommender import (  # noqa: E402
    BASELINES,
    DEPTH,
    TRAINING_HOLDOUTS,
    WindowRows,
    baseline_lists,
    candidate_rows,
    earlier_holdouts,
    fit_ranker,
    labelled,
    ranked_lists,
    window_rows,
)

RESULTS = ROOT / "benchmarks" / "results" / "recommender_ceiling.json"
FOLDS = 5


def rank(windows: list[WindowRows], scored: WindowRows) -> np.ndarray:
    ranker, _ = fit_ranker(windows, reminders=False)
    return ranker.score(scored.rows)


def subset(window: WindowRows, keep: np.ndarray) -> WindowRows:
    return WindowRows(window.holdout, window.rows[keep], window.labels[keep], window.soon[keep])


def main() -> None:
    settings = steps.complete_journey_workspace()
    tables = steps.resolved_tables(settings, ["transactions", "products"])[0]
    products, lookup = tables["products"], steps.offline_lookup(settings)
    holdout = split(tables["transactions"], "time_split")
    earlier = [
        window_rows(inner, products, lookup)
        for inner in earlier_holdouts(holdout, TRAINING_HOLDOUTS["time_split"])
    ]
    history = build_history(holdout.history, holdout.as_of, products)
    pool = CandidatePool().fit(history)
    evaluated = labelled(holdout, candidate_rows(history, pool, holdout.customers, lookup))

    fold_of = pd.Series(
        np.random.default_rng(0).integers(0, FOLDS, len(holdout.customers)),
        index=holdout.customers,
    )
    row_fold = fold_of.reindex(evaluated.rows[CUSTOMER_ID]).to_numpy()
    cross_fit = np.zeros(len(evaluated.rows))
    for fold in range(FOLDS):
        others = subset(evaluated, row_fold != fold)
        scored = subset(evaluated, row_fold == fold)
        cross_fit[row_fold == fold] = rank([others, *earlier], scored)

    rankers = {
        "shipped": ranked_lists(evaluated, rank(earlier, evaluated), DEPTH),
        "cross_fit": ranked_lists(evaluated, cross_fit, DEPTH),
        "in_sample": ranked_lists(evaluated, rank([evaluated], evaluated), DEPTH),
    }
    baselines = {name: baseline_lists(name, pool, history, holdout.customers) for name in BASELINES}
    table = pd.DataFrame(
        {name: score_table_row(holdout, ids) for name, ids in {**rankers, **baselines}.items()}
    ).T[["recall_at_10", "ndcg_at_10"]]
    best = str(table.loc[list(BASELINES), "recall_at_10"].idxmax())
    print(table.round(4).to_string())

    figures: dict = {"best_baseline_name": best}
    for metric in ("recall_at_10", "ndcg_at_10"):
        figures[f"best_baseline_{metric}"] = round(float(table.loc[best, metric]), 4)
        for name in rankers:
            figures[f"{name}_{metric}"] = round(float(table.loc[name, metric]), 4)
            figures[f"{name}_ratio_{metric}"] = round(
                float(table.loc[name, metric] / table.loc[best, metric]), 3
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
