"""Ranked lists kept in memory, so /recommend filters a list instead of ranking per request.

Ranking one customer costs about 80 ms (five candidate generators, their features, LightGBM):
far over what a page view can wait. Ranking is a function of the model, the customer's online
profile and the store, and the per-request rules (repurchases, categories, stock) only drop
products from the order. So each list is ranked once, `depth` deep, and a request keeps the
products its rules allow: when at least k remain, they are exactly the first k the full ranking
with those rules would give. When fewer remain and the list was cut at `depth`, the caller ranks
the request in full.

Time features (days since bought, due ratio) are the request day's, so lists and reminders are
kept per day: a new day ranks again. A customer's list is also tied to the stamp of the profile
it was ranked with; a request that reads a newer profile (a new materialisation) ranks again.
Lists of known customers at their usual store are ranked in one batch for a day (`warm`: when
the service starts, and ahead of a new day); others on first use, and the least recently used
are dropped beyond `capacity`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from cachetools import LRUCache

from features.contract import CUSTOMER_ID, PRODUCT_ID
from serving.schemas import MAX_REMINDERS
from training.recommender import cycle_reason

NOT_PERSONAL = -1  # the customer key of popular lists: they depend on the store only


@dataclass(frozen=True)
class RankedList:
    """One customer's products, best first, with what the rules and the answer need."""

    products: np.ndarray
    scores: np.ndarray
    reasons: np.ndarray
    categories: np.ndarray
    bought: np.ndarray  # bought by the customer (only set on personal lists)
    complete: bool  # holds every candidate: nothing was cut at the depth
    stamp: object = None  # the profile stamp it was ranked with

    def allowed(
        self,
        exclude_purchased: bool,
        include: list[str] | None,
        exclude: list[str] | None,
    ) -> np.ndarray:
        """Positions the rules keep, in rank order."""
        keep = ~self.bought if exclude_purchased else np.ones(len(self.products), bool)
        if include:
            keep &= np.isin(self.categories, include)
        if exclude:
            keep &= ~np.isin(self.categories, exclude)
        return np.flatnonzero(keep)


def split_ranked(frame: pd.DataFrame, categories: pd.Series, depth: int, stamps) -> dict:
    """`NextBestProduct.rank` output (sorted by customer, then rank) -> customer -> RankedList."""
    customers = frame[CUSTOMER_ID].to_numpy()
    products = frame[PRODUCT_ID].to_numpy(np.int64)
    bought = (frame.get("baskets", pd.Series(0.0, index=frame.index)).fillna(0) > 0).to_numpy()
    bought &= frame["personalized"].to_numpy(bool)
    columns = {
        "products": products,
        "scores": frame["score"].to_numpy(float),
        "reasons": frame["reason"].to_numpy(object),
        "categories": categories.reindex(products).to_numpy(object),
        "bought": bought,
    }
    starts = np.flatnonzero(np.r_[True, customers[1:] != customers[:-1]])
    ends = np.r_[starts[1:], len(customers)]
    return {
        int(customers[start]): RankedList(
            **{name: values[start:end] for name, values in columns.items()},
            complete=end - start < depth,
            stamp=stamps.get(int(customers[start])),
        )
        for start, end in zip(starts, ends, strict=True)
    }


def _empty() -> RankedList:
    return RankedList(
        *(np.array([], kind) for kind in (np.int64, float, object, object, bool)), True
    )


EMPTY = _empty()


def as_ranked_list(frame: pd.DataFrame, categories: pd.Series, depth: int) -> RankedList:
    """The ranking of one customer (`NextBestProduct.rank` output) as a list."""
    return next(iter(split_ranked(frame, categories, depth, {}).values()), EMPTY)


class RankedLists:
    """Ranked lists of one model, by (customer, store, day), and reminders, by (customer, day),
    each in a least-recently-used cache of `capacity`; safe to share between request threads.
    `today` is the day of recommending (a `pd.Timestamp`; see `NextBestProduct.days_later`)."""

    def __init__(self, model, lookup, depth: int, capacity: int):
        self.model, self.lookup, self.depth = model, lookup, depth
        self.lists: LRUCache[tuple, RankedList] = LRUCache(capacity)
        self.due: LRUCache[tuple, list[dict]] = LRUCache(capacity)  # as answered, likeliest first
        self.known = frozenset(model.history_.customer_index.tolist())  # who can be personal
        self.home = model.home_store_.to_dict()  # a dict: a Series lookup costs 15 us a request
        self.lock = threading.Lock()

    def key(
        self, customer_id: int | None, store_id: int | None, personal: bool, today: pd.Timestamp
    ) -> tuple:
        if not personal:  # popular at the request's store, or overall without one: any day
            return NOT_PERSONAL, NOT_PERSONAL if store_id is None else store_id, None
        if store_id is None:
            store_id = int(self.home.get(customer_id, NOT_PERSONAL))
        return customer_id, store_id, today

    def warm(self, stamps: pd.Series, today: pd.Timestamp, chunk: int = 500) -> int:
        """Rank every customer of `stamps` (known customer -> profile stamp) at their usual
        store for `today`, in chunks so that requests are served in between; and their
        reminders. Returns how many."""
        customers = stamps.index.to_numpy()
        ranked = 0
        for begin in range(0, len(customers), chunk):
            part = customers[begin : begin + chunk]
            frame = self.model.rank(
                part,
                self.depth,
                personalize=np.ones(len(part), bool),
                lookup=self.lookup,
                today=today,
            )
            lists = split_ranked(frame, self.model.category_, self.depth, stamps)
            due = self._reminder_answers(part, today)
            with self.lock:
                for customer, ranked_list in lists.items():
                    self.lists[self.key(customer, None, True, today)] = ranked_list
                for customer, answers in due.items():
                    self.due[customer, today] = answers
            ranked += len(part)
        return ranked

    def forget_days_before(self, today: pd.Timestamp) -> None:
        """Drop what was kept for earlier days (once `today`'s are ranked ahead)."""
        with self.lock:
            for cache in (self.lists, self.due):
                for key in [k for k in cache if k[-1] is not None and k[-1] < today]:
                    del cache[key]

    def get_many(
        self,
        customer_ids: list,
        store_id: int | None,
        personal: np.ndarray,
        stamps: list,
        today: pd.Timestamp,
    ) -> list[RankedList]:
        """The list of each customer (or the popular one) at the store for `today`: kept ones,
        and the rest ranked now in one call (those not kept, or kept with an older profile
        stamp)."""
        keys = [
            self.key(c, store_id, p, today) for c, p in zip(customer_ids, personal, strict=True)
        ]
        with self.lock:
            found = [self.lists.get(key) for key in keys]  # a hit counts as recent use
            for i in range(len(keys)):
                if found[i] is not None and personal[i] and found[i].stamp != stamps[i]:
                    found[i] = None  # a newer profile: rank again
        missing = [i for i, f in enumerate(found) if f is None]
        if not missing:
            return found
        fresh = {}
        wanted = [i for i in missing if personal[i]]
        if wanted:
            customers = np.array([customer_ids[i] for i in wanted], np.int64)
            frame = self.model.rank(
                customers,
                self.depth,
                store_id=store_id,
                personalize=np.ones(len(customers), bool),
                lookup=self.lookup,
                today=today,
            )
            ranked = split_ranked(
                frame,
                self.model.category_,
                self.depth,
                {customer_ids[i]: stamps[i] for i in wanted},
            )
            # No candidates is an answer too: kept with its stamp, not ranked again each time.
            empty = {i: replace(EMPTY, stamp=stamps[i]) for i in wanted}
            fresh.update({keys[i]: ranked.get(customer_ids[i], empty[i]) for i in wanted})
        if len(wanted) < len(missing):  # one popular list serves every non-personal caller
            frame = self.model.rank(
                np.array([NOT_PERSONAL]),
                self.depth,
                store_id=store_id,
                personalize=np.zeros(1, bool),
            )
            fresh[self.key(None, store_id, False, today)] = as_ranked_list(
                frame, self.model.category_, self.depth
            )
        with self.lock:
            for key, ranked_list in fresh.items():
                self.lists[key] = ranked_list  # the least recently used go beyond capacity
        return [fresh[keys[i]] if f is None else f for i, f in enumerate(found)]

    def reminders(self, customer_id: int, n: int, today: pd.Timestamp) -> list[dict]:
        """Up to n due repurchases of a known customer on `today` (from the model's history
        and the day: kept per model and day)."""
        with self.lock:
            due = self.due.get((customer_id, today))
        if due is None:
            due = self._reminder_answers(np.array([customer_id]), today)[customer_id]
            with self.lock:
                self.due[customer_id, today] = due
        return due[:n]

    def _reminder_answers(
        self, customers: np.ndarray, today: pd.Timestamp
    ) -> dict[int, list[dict]]:
        """Customer -> reminders as answered; an empty list for customers with none due."""
        none = {int(customer): [] for customer in customers}
        due = self.model.due(customers, MAX_REMINDERS, today=today)
        if due.empty:
            return none
        answers = pd.DataFrame(
            {
                CUSTOMER_ID: due[CUSTOMER_ID].astype(np.int64),
                PRODUCT_ID: due[PRODUCT_ID].astype(np.int64),
                "probability": due["probability"].astype(float).round(4),
                "within_days": self.model.reminders.days,
                "due_in_days": due["due_in_days"].astype(float).round(1),
                "reason": [
                    cycle_reason(c, d)
                    for c, d in zip(due["cycle_days"], due["days_since_bought"], strict=True)
                ],
            }
        )
        return none | {
            int(customer): group.drop(columns=CUSTOMER_ID).to_dict("records")
            for customer, group in answers.groupby(CUSTOMER_ID)
        }
