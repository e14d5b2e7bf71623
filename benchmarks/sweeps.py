"""Sweep figures on Complete Journey: a 30-trial forecaster sweep, and two workers on PostgreSQL.

    .venv/bin/python benchmarks/sweeps.py                  # both parts -> results/sweeps.json
    .venv/bin/python benchmarks/sweeps.py --part parallel  # part 2 only, merged into the file

1. `sweep_30_trials_s`: `omnishelf sweep forecaster --trials 30` in the default workspace (the
   demo's data and features): TPE, median pruning after each validation window, nested MLflow
   runs, the best refit and registered as challenger. `default_score` is the untuned
   configuration (the study's first trial), `best_score` the best trial, both the mean WRMSSE
   over the validation windows (`score_name`).
2. `two_worker_wall_ratio`: the wall time of two workers (one LightGBM thread each) sharing one
   study on PostgreSQL (127.0.0.1:5432, database test), against one single-thread worker running
   the same number of trials alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.settings import Settings  # noqa: E402
from pipelines import steps  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "sweeps.json"
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
OMNISHELF = Path(sys.executable).parent / "omnishelf"
TRIALS = 30
# Per comparison: one worker runs 16 trials, two workers 8 each. Each worker also pays a fixed
# ~50 s (imports, the feature join, refitting the best), which 8 trials barely cover.
PARALLEL_TRIALS = 16


def workers(study: str, count: int, trials_each: int) -> float:
    """Wall seconds of `count` single-thread workers running `trials_each` trials of one study."""
    env = {**os.environ, "OMNISHELF_OPTUNA_STORAGE": POSTGRES_URL}
    command = [str(OMNISHELF), "sweep", "forecaster", "--study", study, "--threads", "1"]
    began = time.perf_counter()
    running = [
        subprocess.Popen(
            [*command, "--trials", str(trials_each)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for worker in running:
        _, errors = worker.communicate()
        if worker.returncode:
            raise RuntimeError(f"a sweep worker failed: {errors[-2000:]}")
    return time.perf_counter() - began


def sweep_figures(settings: Settings) -> dict:
    from pipelines import sweeps

    study = f"benchmark-{uuid.uuid4().hex[:8]}"
    began = time.perf_counter()
    result = sweeps.sweep(settings, "forecaster", TRIALS, study_name=study)
    return {
        "sweep_30_trials_s": round(time.perf_counter() - began, 1),
        "default_score": round(result.default_score, 4),
        "best_score": round(result.best_score, 4),
        "score_name": "validation_wrmsse (mean over 2 backtest windows, lower is better)",
        "best_holdout_wrmsse": round(result.holdout_score, 4),
        "pruned_trials": sum(
            t.state == optuna.trial.TrialState.PRUNED for t in result.study.trials
        ),
    }


def parallel_figures() -> dict:
    alone = f"alone-{uuid.uuid4().hex[:8]}"
    pair = f"pair-{uuid.uuid4().hex[:8]}"
    one = workers(alone, 1, PARALLEL_TRIALS)
    two = workers(pair, 2, PARALLEL_TRIALS // 2)
    for name in (alone, pair):
        trials = optuna.load_study(study_name=name, storage=POSTGRES_URL).trials
        assert len(trials) == PARALLEL_TRIALS, (name, len(trials))
        optuna.delete_study(study_name=name, storage=POSTGRES_URL)
    return {
        "parallel_trials": PARALLEL_TRIALS,
        "one_worker_s": round(one, 1),
        "two_workers_s": round(two, 1),
        "two_worker_wall_ratio": round(two / one, 3),
    }


def main() -> None:
    settings = steps.complete_journey_workspace()
    only_parallel = sys.argv[1:] == ["--part", "parallel"]
    figures = json.loads(RESULTS.read_text()) if only_parallel else sweep_figures(settings)
    print(figures)
    figures |= parallel_figures()
    print(figures)
    steps.write_results(RESULTS, figures)


if __name__ == "__main__":
    main()
