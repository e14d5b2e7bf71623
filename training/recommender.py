"""Next-best-product: candidate generators, a LightGBM ranker over their union, serving rules,
reasons and repurchase reminders, in one object that MLflow stores and the service loads.

Training (`train_ranker`) learns on earlier holdouts of the chosen protocol, so a ranker scored
on a holdout never saw it; after scoring, the ranker is refit on the newest holdouts, up to the
data's last day (`Refit`), and the served model (`NextBestProduct`) refits the generators on all
history around that ranker. The served model's time features (days since bought, due ratio,
reminder due dates) are computed for the day of each request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from features.contract import CATEGORY, CUSTOMER_ID, PRODUCT_ID, STORE_ID, TS
from features.engineering import EVENT_TIMESTAMP
from training.candidates import (
    BPR,
    History,
    ItemItem,
    Repurchase,
    build_history,
    fill,
    top_n,
)
from training.evaluation import Holdout, recall_curve, score_table_row, segments, split
from training.ranker import (
    NUM_BOOST_ROUND,
    CandidatePool,
    FeatureLookup,
    HistoryFeatures,
    Ranker,
    label,
)
from training.reminders import Reminders, precision_at_k

# What /recommend applies per request; registered with the model so reviewers see it.
SERVING_RULES = {
    "repurchases": "allowed unless the request sets exclude_purchased",
    "in_stock_only": "only products with stock on hand at store_id (store x product features)",
    "categories": "include_categories / exclude_categories filter by product category",
    "opted_out": "popular at the store, then overall; no personal data used",
    "cold_start": "customers without history get popular at the store, then overall",
    "new_products": "products first sold in the last 28 days reach buyers of their category",
}
# What a fitted NextBestProduct carries; raise it when that changes, so that
# `tracking.load_champion` refuses a model an older omnishelf pickled instead of letting every
# request fail on an attribute it lacks.
FORMAT_VERSION = 3
# Earlier holdouts the ranker learns from, per protocol: next-basket holdouts are small (one
# basket per customer) and gained from more in exploratory runs; the time split's 28-day
# windows did not.
TRAINING_HOLDOUTS = {"time_split": 3, "next_basket": 6}


def with_features(
    rows: pd.DataFrame,
    stores: pd.Series,
    as_of: pd.Series | pd.Timestamp,
    lookup: FeatureLookup,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """`rows` plus the looked-up features of each row's customer, product and store
    (`stores`: customer -> store) at its moment (`as_of`: per customer, or one for all);
    `columns` keeps only those, as numbers."""
    customers = rows[CUSTOMER_ID]
    keys = pd.DataFrame(
        {
            CUSTOMER_ID: customers.to_numpy(),
            PRODUCT_ID: rows[PRODUCT_ID].to_numpy(),
            STORE_ID: stores.reindex(customers).fillna(-1).astype(np.int64).to_numpy(),
            EVENT_TIMESTAMP: (
                as_of.reindex(customers).to_numpy() if isinstance(as_of, pd.Series) else as_of
            ),
        }
    )
    external = lookup(keys).drop(columns=list(keys.columns)).reset_index(drop=True)
    if columns is not None:
        # Online rows missing a value come back as None: numbers, or NaN, for LightGBM.
        external = external[columns].apply(pd.to_numeric, errors="coerce")
    return pd.concat([rows, external], axis=1)


def candidate_rows(
    history: History, pool: CandidatePool, customer_ids, lookup: FeatureLookup | None
) -> pd.DataFrame:
    """Candidates of the customers with every feature the ranker reads (their usual store's)."""
    rows = HistoryFeatures().fit(history).rows(pool.candidates(customer_ids))
    if lookup is None:
        return rows
    home = history.customers.set_index(CUSTOMER_ID)[STORE_ID]
    return with_features(rows, home, history.as_of, lookup)


@dataclass
class WindowRows:
    """Candidate rows of one holdout, labelled with what the ranker and the reminder model learn."""

    holdout: Holdout
    rows: pd.DataFrame
    labels: np.ndarray  # bought in the target
    soon: np.ndarray  # bought within the reminder window


def labelled(holdout: Holdout, rows: pd.DataFrame) -> WindowRows:
    return WindowRows(
        holdout,
        rows,
        label(rows, holdout.customers, holdout.relevant),
        label(rows, holdout.customers, holdout.relevant_within(Reminders.days)),
    )


def window_rows(
    holdout: Holdout, products: pd.DataFrame, lookup: FeatureLookup | None
) -> WindowRows:
    """The labelled candidates of a holdout, from generators fitted on its history alone."""
    history = build_history(holdout.history, holdout.as_of, products)
    return labelled(
        holdout, candidate_rows(history, CandidatePool().fit(history), holdout.customers, lookup)
    )


def earlier_holdouts(holdout: Holdout, n: int) -> list[Holdout]:
    """Up to `n` holdouts of the same protocol before `holdout`, newest first, each cut from the
    history before the previous one; fewer when the history runs out."""
    found, inner = [], holdout
    for _ in range(n):
        try:
            inner = split(inner.history, holdout.protocol)
        except ValueError:
            break  # the history is too short for another holdout
        if len(inner.customers) == 0:
            break
        found.append(inner)
    return found


def fit_ranker(
    windows: list[WindowRows],
    params: dict | None = None,
    num_boost_round: int = NUM_BOOST_ROUND,
    reminders: bool = True,
) -> tuple[Ranker, Reminders | None]:
    """A ranker (and, on the time split and unless told not to, the reminder model) learned on
    labelled windows."""
    if not windows:
        raise ValueError("no earlier holdout to learn a ranker from")
    rows = pd.concat([w.rows for w in windows], ignore_index=True)
    # A customer in two holdouts is two ranking groups.
    window = np.repeat(np.arange(len(windows)), [len(w.rows) for w in windows])
    groups = rows.groupby([window, rows[CUSTOMER_ID].to_numpy()], sort=False).ngroup()
    ranker = Ranker(params, num_boost_round).fit(
        rows, np.concatenate([w.labels for w in windows]), groups.to_numpy()
    )
    # Reminders are about the coming days, which only the time split's calendar defines.
    due = (
        Reminders().fit(rows, np.concatenate([w.soon for w in windows]))
        if reminders and windows[0].holdout.protocol == "time_split"
        else None
    )
    return ranker, due


def training_windows(
    holdout: Holdout,
    products: pd.DataFrame,
    lookup: FeatureLookup | None = None,
    holdouts: int | None = None,
    progress: bool = False,
) -> list[WindowRows]:
    """The labelled rows of `holdouts` earlier holdouts of the same protocol, newest first."""
    earlier = earlier_holdouts(holdout, holdouts or TRAINING_HOLDOUTS[holdout.protocol])
    if not earlier:
        raise ValueError(
            f"the history before the {holdout.protocol} holdout is too short to learn a ranker"
        )
    return [
        window_rows(inner, products, lookup)
        for inner in tqdm(earlier, desc=f"{holdout.protocol}: ranker rows", disable=not progress)
    ]


def train_ranker(
    holdout: Holdout,
    products: pd.DataFrame,
    lookup: FeatureLookup | None = None,
    holdouts: int | None = None,
    progress: bool = False,
) -> tuple[Ranker, Reminders | None]:
    """A ranker (and the reminder model) learned on `holdouts` earlier holdouts of the same
    protocol."""
    return fit_ranker(training_windows(holdout, products, lookup, holdouts, progress))


def ranked_lists(window: WindowRows, scores: np.ndarray, depth: int) -> np.ndarray:
    """The top-`depth` products of each of the window's customers by `scores`, one per row
    (a ranker's), as (customers, depth) ids."""
    scored = window.rows[[CUSTOMER_ID, PRODUCT_ID]].assign(score=scores)
    return top_n(scored, "score", window.holdout.customers, depth)[0]


def ago(day: float) -> str:
    """A history day (1 = the day of recommending, see `build_history`) as words."""
    days = int(round(day)) - 1
    return "today" if days <= 0 else "yesterday" if days == 1 else f"{days} days ago"


def cycle_reason(cycle_days: float, day: float) -> str:
    return f"bought every ~{cycle_days:.0f} days, last {ago(day)}"


class NextBestProduct:
    """What /recommend serves. Known customers who allow personalisation get the ranker's order
    over the candidates; everyone else (opted out, new, unknown) gets popular products at the
    store (the request's, else their usual one), then overall, with no personal data used."""

    def __init__(self, ranker: Ranker, reminders: Reminders | None = None):
        self.ranker, self.reminders = ranker, reminders

    def fit(self, transactions: pd.DataFrame, products: pd.DataFrame) -> NextBestProduct:
        """Generators on all history, as of the last purchase."""
        as_of = transactions[TS].max()
        self.history_ = build_history(transactions, as_of, products)
        self.pool_ = CandidatePool().fit(self.history_)
        self.features_ = HistoryFeatures().fit(self.history_)  # reads the lines: fit first
        self.history_.lines = None  # only the summaries are needed from here on
        self.as_of_ = as_of
        self.day_ = as_of.normalize()  # history day 1: request days count from it
        self.home_store_ = self.history_.customers.set_index(CUSTOMER_ID)[STORE_ID]
        self.category_ = self.history_.products.set_index(PRODUCT_ID)[CATEGORY]
        self.categories_ = frozenset(self.category_.unique()) - {""}  # checked per request
        self.stores_ = set(self.pool_.generators["popular_in_store"].stores().tolist())
        self.external_columns_ = [c for c in self.ranker.feature_names_ if "__" in c]
        self.format_version_ = FORMAT_VERSION
        return self

    def unservable_reason(self) -> str | None:
        """Why this fitted model cannot answer requests, or None when it can."""
        if getattr(self, "format_version_", None) != FORMAT_VERSION:
            return "it was fitted by an older omnishelf"
        return None

    def days_later(self, today=None) -> int:
        """Whole days from the history's last day to `today` (the day of recommending; None:
        the last day itself). A day before it counts as that day: purchases after `today`
        cannot be taken out of the history."""
        if today is None:
            return 0
        return max(0, (pd.Timestamp(today).normalize() - self.day_).days)

    def knows(self, customer_ids) -> np.ndarray:
        return self.history_.customer_index.get_indexer(np.asarray(customer_ids)) >= 0

    def personal(self, customer_ids, personalize: np.ndarray | None = None) -> np.ndarray:
        """Which customers get the ranker: known to the history and allowing personalisation."""
        personal = self.knows(customer_ids)
        if personalize is not None:
            personal &= np.asarray(personalize, bool)
        return personal

    def knows_store(self, store_id: int) -> bool:
        return store_id in self.stores_

    def categories(self) -> frozenset[str]:
        return self.categories_

    def rank(
        self,
        customer_ids,
        depth: int,
        store_id: int | None = None,
        personalize: np.ndarray | None = None,
        exclude_purchased: bool = False,
        include_categories: list[str] | None = None,
        exclude_categories: list[str] | None = None,
        lookup: FeatureLookup | None = None,
        today=None,
    ) -> pd.DataFrame:
        """Up to `depth` ranked products per customer after the serving rules (stock filters
        are the caller's: it knows the store's stock), with time features as of `today` (see
        `days_later`)."""
        customer_ids = np.asarray(customer_ids)
        if len(np.unique(customer_ids)) != len(customer_ids):
            raise ValueError("customer_ids must not repeat a customer")
        personal = self.personal(customer_ids, personalize)
        if len(customer_ids) == 0:
            return pd.DataFrame(columns=[CUSTOMER_ID, PRODUCT_ID, "score", "rank", "reason"])
        if store_id is not None:
            stores = np.full(len(customer_ids), store_id)
        else:
            # The usual store is personal data: only personalised rows may use it.
            home = self.home_store_.reindex(customer_ids).fillna(-1).astype(np.int64).to_numpy()
            stores = np.where(personal, home, -1)
        frames = []
        if personal.any():
            frames.append(
                self._personal(
                    customer_ids[personal], stores[personal], lookup, self.days_later(today)
                )
            )
        if (~personal).any():
            frames.append(self._popular(customer_ids[~personal], stores[~personal]))
        frame = pd.concat(frames, ignore_index=True)
        frame = self._apply_rules(frame, exclude_purchased, include_categories, exclude_categories)
        frame = frame.sort_values([CUSTOMER_ID, "score"], ascending=[True, False], kind="stable")
        frame["rank"] = frame.groupby(CUSTOMER_ID).cumcount() + 1
        frame = frame[frame["rank"] <= depth].reset_index(drop=True)
        frame["reason"] = self._reasons(frame)
        return frame

    def _personal(self, customer_ids, stores, lookup, days_later: int) -> pd.DataFrame:
        candidates = self.pool_.candidates(customer_ids, stores)
        rows = self.features_.rows(candidates, days_later)
        stores = pd.Series(stores, index=customer_ids)
        if self.external_columns_:
            if lookup is None:
                raise ValueError("this ranker reads Feast features: pass a feature lookup")
            rows = with_features(rows, stores, self.as_of_, lookup, self.external_columns_)
        rows["score"] = self.ranker.score(rows)
        rows[STORE_ID] = stores.reindex(rows[CUSTOMER_ID]).to_numpy()
        rows["personalized"] = True
        return rows

    def _popular(self, customer_ids, stores) -> pd.DataFrame:
        n = 200
        in_store, _ = self.pool_.generators["popular_in_store"].candidates(customer_ids, n, stores)
        overall, _ = self.pool_.generators["popular"].candidates(customer_ids, n)
        ids = fill(in_store, overall, n)
        valid = ids >= 0
        rows, ranks = np.nonzero(valid)
        at_store = ranks < (in_store >= 0).sum(axis=1)[rows]  # fill puts the store's first
        return pd.DataFrame(
            {
                CUSTOMER_ID: customer_ids[rows],
                PRODUCT_ID: ids[valid],
                STORE_ID: stores[rows],
                "score": 1.0 / (ranks + 1),
                "popular_in_store_rank": np.where(at_store, ranks + 1.0, np.nan),
                "popular_rank": np.where(at_store, np.nan, ranks + 1.0),
                "personalized": False,
            }
        )

    def _apply_rules(self, frame, exclude_purchased, include, exclude) -> pd.DataFrame:
        keep = np.ones(len(frame), bool)
        if exclude_purchased:
            # Opted-out rows keep products they bought: excluding them would use their history.
            bought = frame.get("baskets", pd.Series(0.0, index=frame.index)).fillna(0) > 0
            keep &= ~(bought & frame["personalized"]).to_numpy()
        if include or exclude:
            category = self.category_.reindex(frame[PRODUCT_ID]).to_numpy()
            if include:
                keep &= np.isin(category, include)
            if exclude:
                keep &= ~np.isin(category, exclude)
        return frame[keep]

    def _reasons(self, frame: pd.DataFrame) -> np.ndarray:
        """Why each product is shown, from the generator and the features that put it there."""

        def column(name):
            return frame[name].to_numpy() if name in frame else np.full(len(frame), np.nan)

        baskets, cycle = column("baskets"), column("cycle_days")
        since = column("days_since_bought")
        reason = np.array(["popular with all customers"] * len(frame), dtype=object)
        at_store = ~np.isnan(column("popular_in_store_rank"))
        reason[at_store] = [f"popular at store {s}" for s in frame[STORE_ID].to_numpy()[at_store]]
        similar = ~np.isnan(column("als_rank"))
        reason[similar] = "customers who buy like you buy it"
        new = ~np.isnan(column("new_in_category_rank"))
        categories = self.category_.reindex(frame[PRODUCT_ID]).to_numpy()
        reason[new] = [f"new in {c}, a category you buy" for c in categories[new]]
        neighbour = ~np.isnan(column("item_item_rank"))
        if neighbour.any():
            because = self.pool_.generators["item_item"].because_of(
                frame[CUSTOMER_ID].to_numpy()[neighbour], frame[PRODUCT_ID].to_numpy()[neighbour]
            )
            texts = np.array(
                [f"often bought with {b}, which you buy" if b >= 0 else None for b in because],
                dtype=object,
            )
            positions = np.flatnonzero(neighbour)[because >= 0]
            reason[positions] = texts[because >= 0]
        once = baskets == 1
        reason[once] = [f"you bought it once, {ago(d)}" for d in since[once]]
        repeat = (baskets >= 2) & ~np.isnan(cycle)
        reason[repeat] = [
            cycle_reason(c, d) for c, d in zip(cycle[repeat], since[repeat], strict=True)
        ]
        return reason

    def due(self, customer_ids, n: int, today=None) -> pd.DataFrame:
        """Repurchase reminders: up to n products per customer, most likely within the reminder
        window first, with their due dates counted from `today` (see `days_later`)."""
        if self.reminders is None:
            return pd.DataFrame(columns=[CUSTOMER_ID, PRODUCT_ID, "probability", "due_in_days"])
        return self.reminders.due(
            self.features_, np.asarray(customer_ids), n, self.days_later(today)
        )

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """customer_id (and optional k) -> one row per customer x rank (MLflow's pyfunc input);
        without Feast features at hand the popular answer stands in where the ranker needs them."""
        k = int(frame["k"].iloc[0]) if "k" in frame else 10
        personalize = None if not self.external_columns_ else np.zeros(len(frame), bool)
        ranked = self.rank(frame[CUSTOMER_ID].to_numpy(), k, personalize=personalize)
        return ranked[[CUSTOMER_ID, "rank", PRODUCT_ID, "score", "personalized", "reason"]]


BASELINES = (
    "gp_topfreq",
    "gp_topfreq_decay",
    "item_item_bm25",
    "item_item_cosine",
    "als",
    "bpr",
    "popular",
    "popular_in_store",
)
FINAL = "omnishelf"
HEADLINE_METRICS = ("recall_at_10", "ndcg_at_10")
TABLE_METRICS = (  # the columns of the tables printed for reviewers
    "recall_at_10",
    "ndcg_at_10",
    "recall_at_20",
    "ndcg_at_20",
    "hit_rate_at_10",
    "map_at_10",
    "coverage_at_10",
    "repeat_recall_at_10",
    "new_recall_at_10",
)
DEPTH = 50


@dataclass
class Refit:
    """The ranker (and reminder model) learned again once the evaluation is done, on as many
    holdouts as before with the evaluated one newest: what is served, so that it has learned
    from the data's last weeks. Nothing is left to score it on: the figures reported for it
    are the evaluation's, of the ranker learned before the cut-off."""

    ranker: Ranker
    reminders: Reminders | None
    fit_until: pd.Timestamp  # the last moment of the data it learned from


@dataclass
class Evaluation:
    protocol: str
    holdout: Holdout
    table: pd.DataFrame  # model -> metrics, the final model first
    curves: dict[str, list[float]]
    segments: pd.DataFrame  # segment x model -> recall/ndcg@10 and customers
    reminder_scores: dict[str, float]
    ranker: Ranker
    reminders: Reminders | None
    refit: Refit | None = None  # with `evaluate_protocol(refit=True)`

    @property
    def best_baseline(self) -> str:
        return best_baseline(self.table)


def best_baseline(table: pd.DataFrame) -> str:
    """The baseline with the highest Recall@10 in a metric table."""
    return str(table.drop(index=FINAL)["recall_at_10"].idxmax())


def baseline_lists(name: str, pool: CandidatePool, history: History, customers) -> np.ndarray:
    """Top-DEPTH lists of one baseline, reusing the pool's fitted generators where it can."""
    generators = pool.generators
    popular = generators["popular"].candidates(customers, DEPTH)[0]
    if name == "gp_topfreq":
        return fill(
            Repurchase("baskets").fit(history).candidates(customers, DEPTH)[0], popular, DEPTH
        )
    if name == "gp_topfreq_decay":
        return fill(generators["repurchase"].candidates(customers, DEPTH)[0], popular, DEPTH)
    if name == "item_item_bm25":
        return generators["item_item"].candidates(customers, DEPTH)[0]
    if name == "item_item_cosine":
        return ItemItem(weighting="cosine").fit(history).candidates(customers, DEPTH)[0]
    if name == "als":
        return generators["als"].candidates(customers, DEPTH)[0]
    if name == "bpr":
        return BPR().fit(history).candidates(customers, DEPTH)[0]
    if name == "popular":
        return popular
    if name == "popular_in_store":
        return generators["popular_in_store"].candidates(customers, DEPTH)[0]
    raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")


def evaluate_protocol(
    transactions: pd.DataFrame,
    products: pd.DataFrame,
    protocol: str,
    lookup: FeatureLookup | None = None,
    baselines=BASELINES,
    progress: bool = False,
    refit: bool = False,
) -> Evaluation:
    """The final model and every baseline on the same holdout, in one table; with `refit`,
    the ranker then learned again up to the data's last day (`Refit`)."""
    holdout = split(transactions, protocol)
    if len(holdout.customers) == 0:
        raise ValueError(f"{protocol}: no customer has both history and a target to score")
    windows = training_windows(holdout, products, lookup, progress=progress)
    ranker, reminders = fit_ranker(windows)
    # The refit learns on as many holdouts, the evaluated one newest: the oldest goes now.
    newer = windows[:-1] if refit else []
    del windows
    history = build_history(holdout.history, holdout.as_of, products)
    pool = CandidatePool().fit(history)
    window = labelled(holdout, candidate_rows(history, pool, holdout.customers, lookup))
    lists = {FINAL: ranked_lists(window, ranker.score(window.rows), DEPTH)}
    for name in tqdm(baselines, desc=f"{protocol}: baselines", disable=not progress):
        lists[name] = baseline_lists(name, pool, history, holdout.customers)
    table = pd.DataFrame({name: score_table_row(holdout, ids) for name, ids in lists.items()}).T
    table["customers"] = len(holdout.customers)
    curves = {name: recall_curve(holdout, ids) for name, ids in lists.items()}
    best = best_baseline(table)
    parts = []
    for segment, mask in segments(holdout).items():
        for name in (FINAL, best):
            sub = holdout.subset(mask)
            row = score_table_row(sub, lists[name][mask])
            parts.append(
                {
                    "segment": segment,
                    "model": name,
                    "customers": int(mask.sum()),
                    "recall_at_10": row["recall_at_10"],
                    "ndcg_at_10": row["ndcg_at_10"],
                }
            )
    reminder_scores = {}
    if reminders is not None:
        rows, soon = window.rows, window.soon
        repeat = (rows["baskets"] >= 2).to_numpy()
        for k in (5,):
            reminder_scores[f"reminder_precision_at_{k}"] = precision_at_k(
                rows[repeat], reminders.probability(rows[repeat]), soon[repeat], k
            )
            reminder_scores[f"reminder_baseline_precision_at_{k}"] = precision_at_k(
                rows[repeat], rows.loc[repeat, "decayed"].to_numpy(), soon[repeat], k
            )
    latest = (
        Refit(*fit_ranker([window, *newer]), fit_until=transactions[TS].max()) if refit else None
    )
    return Evaluation(
        protocol,
        holdout,
        table,
        curves,
        pd.DataFrame(parts),
        reminder_scores,
        ranker,
        reminders,
        latest,
    )
