"""How the CLI names a registered model: from what the registry holds, not from what the code
that trained it was meant to train."""

from __future__ import annotations

# What each registered class is, in words (tracking.register records the class as a tag).
MODEL_KINDS = {
    "NextBestProduct": "LightGBM ranker over candidate generators",
    "DemandForecaster": "LightGBM demand forecaster with P10/P50/P90",
}


def champion_title(found) -> str:
    """One line on a registered model version (`found`): name, version, what model it is and
    its holdout score, e.g. `omnishelf-recommender v3: LightGBM ranker over candidate
    generators, recall_at_10 0.2143 on the holdout`."""
    tags = found.tags
    model_class = tags.get("model_class")
    kind = MODEL_KINDS.get(model_class, model_class) or tags.get("model_family", "model")
    title = f"{found.name} v{found.version}: {kind}"
    metric = tags.get("holdout_metric")
    if metric and metric in tags:
        title += f", {metric} {float(tags[metric]):.4f} on the holdout"
    return title
