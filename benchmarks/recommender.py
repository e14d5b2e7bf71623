"""Next-best-product figures on Complete Journey: the final model against every baseline.

    .venv/bin/python benchmarks/recommender.py        # writes benchmarks/results/recommender.json

1. Both protocols (time split, next basket): the ranker and every baseline on the same holdout,
   the same table (`omnishelf evaluate recommender` runs the same code on any imported data).
2. `train_s`: the whole training step as `omnishelf train recommender --force` runs it
   (evaluation, refit on all history, MLflow logging and registration).
3. `batch_recommend_all_s`: top-10 with reasons for every household, features read from the
   online store in batches, the champion loaded once.

It works in the default workspace (data/, mlruns/): the demo's tables and features are reused.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.contract import CUSTOMER_ID  # noqa: E402
from features.feature_store import OnlineFeatureLookup, open_store  # noqa: E402
from pipelines import steps  # noqa: E402
from training import tracking  # noqa: E402
from training.recommender import FINAL, TABLE_METRICS  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "recommender.json"


def main() -> None:
    settings = steps.complete_journey_workspace()
    figures: dict = {}
    for evaluation in steps.evaluate_recommender(settings, ["time_split", "next_basket"]):
        protocol, table = evaluation.protocol, evaluation.table
        best = evaluation.best_baseline
        print(
            f"\n{protocol}: {len(evaluation.holdout.customers):,} customers, "
            f"{evaluation.holdout.catalogue:,} products"
        )
        print(table[list(TABLE_METRICS)].round(4).to_string())
        print(evaluation.segments.round(4).to_string(index=False))
        for metric in ("recall_at_10", "ndcg_at_10"):
            figures[f"{protocol}_final_{metric}"] = round(float(table.loc[FINAL, metric]), 4)
            best_value = float(table.drop(index=FINAL)[metric].max())
            figures[f"{protocol}_best_baseline_{metric}"] = round(best_value, 4)
            figures[f"{protocol}_ratio_{metric}"] = round(
                float(table.loc[FINAL, metric]) / best_value, 3
            )
        figures[f"{protocol}_best_baseline_name"] = best
        for name, value in evaluation.reminder_scores.items():
            figures[name] = round(value, 4)

    began = time.perf_counter()
    steps.train_recommender(settings, force=True)
    figures["train_s"] = round(time.perf_counter() - began, 1)

    model, _ = tracking.load_champion(settings.recommender_name)
    customers = pd.read_parquet(settings.tables_dir / "customers.parquet")[CUSTOMER_ID]
    lookup = OnlineFeatureLookup(
        open_store(settings), "ranker_v1", cached=("product_profile", "store_daily")
    )
    began = time.perf_counter()
    ranked = model.rank(customers.to_numpy(), 10, lookup=lookup)
    figures["batch_recommend_all_s"] = round(time.perf_counter() - began, 2)
    figures["batch_customers"] = int(ranked[CUSTOMER_ID].nunique())

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
