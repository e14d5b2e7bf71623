"""The omnishelf service: next-best-product, demand forecast and restock orders over HTTP.

Models come from the MLflow registry (the `champion` alias) and features from the Feast online
store. A watcher swaps in a new champion when its alias moves, and follows the clock: when newer
data is materialised (or, on the wall clock, a day passes), recommendations and reminders are
ranked for the new day without retraining. BentoML adds /healthz, /livez, /readyz, /metrics and
the OpenAPI page at /docs.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import bentoml
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from serving.access import accepted_keys, announce
from serving.guard import RequestGuard
from serving.schemas import (
    CustomerRef,
    ForecastRequest,
    ForecastResponse,
    RecommendBatchRequest,
    RecommendBatchResponse,
    RecommendOptions,
    RecommendRequest,
    RecommendResponse,
    RemindersRequest,
    RemindersResponse,
    RestockBatchRequest,
    RestockBatchResponse,
    RestockRequest,
    RestockResponse,
)

with bentoml.importing():
    import cachetools
    import mlflow
    import numpy as np
    import pandas as pd

    from features.contract import CUSTOMER_ID, PRODUCT_ID, STORE_ID
    from features.engineering import EVENT_TIMESTAMP, PERIOD_DAYS
    from features.errors import UserInputError
    from features.feature_store import (
        OnlineFeatureLookup,
        OnlineReader,
        data_clock,
        open_store,
        read_offline_table,
    )
    from features.identity import IDENTITY_KEY
    from features.redaction import scrub
    from features.settings import Settings
    from serving.ranked_lists import NOT_PERSONAL, RankedList, RankedLists, as_ranked_list
    from training import tracking
    from training.forecast_plan import PLAN_TABLES, ForecastPlan, origin_stamp, read_plan
    from training.forecaster import FORECAST
    from training.restock import ORDER_COLUMNS, plan_orders

log = logging.getLogger(__name__)
# Ranked lists kept beyond the known customers' (other stores, popular lists): about 20 kB each.
EXTRA_LISTS = 5000
UNREACHABLE = "feature_store_unavailable"
STOCK_UNKNOWN = "stock_unavailable"  # in_stock_only could not be applied
DEMAND_VIEW = "store_product_demand"  # the view of both demand services, demand_v1 and restock_v1
# Views whose newest stamp is "now" on the data clock (identities are stamped when resolved).
CLOCK_VIEWS = ["customer_profile", "store_daily", "store_product_demand", "product_profile"]


def _stale(features: pd.DataFrame) -> list[int]:
    return [int(p) for p in features.loc[features["stale"], PRODUCT_ID]]


# What a restock batch pair adds to the forecaster's inputs for `plan_orders`.
RESTOCK_INPUTS = ("on_hand", "on_order", "lead_time_days", "pack_size", "min_order_qty")


def model_inputs(model, features: pd.DataFrame) -> pd.DataFrame:
    """The columns a forecaster reads, from online features as of its origin."""
    return features[[STORE_ID, PRODUCT_ID, EVENT_TIMESTAMP, *model.input_names_]]


def today(clock: datetime | None) -> pd.Timestamp:
    """The day of recommending: the data clock's (the newest materialised data: replays and
    tests are deterministic), or the wall clock's without one."""
    return pd.Timestamp(clock or datetime.now(UTC).replace(tzinfo=None)).normalize()


def not_found(field: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=404)


def unprocessable(field: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=422)


def origin_day(features: pd.DataFrame):
    """The last day of data a forecast starts after: the day before its features' stamp."""
    return (features[EVENT_TIMESTAMP].iloc[0] - pd.Timedelta(days=1)).date()


def profile_stamps(feature_ts) -> list[int]:
    """When each customer profile was written (seconds; one constant for none): the version of
    the profile a ranked list was made from."""
    return np.asarray(feature_ts, "datetime64[s]").astype(np.int64).tolist()


def settle_heap() -> None:
    """Move every object alive now (models, kept lists: about 450,000 on Complete Journey) to
    the collector's permanent generation. A full collection walks them all, 250 ms, and the
    requests in flight would wait for it. Unfreezing first lets a replaced model's objects be
    collected."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class Customer:
    """Whom a request names, and whether its answer may use their data."""

    id: int | None
    personal: bool
    stamp: int | None  # their profile's version (see profile_stamps)
    stale: bool
    fallback: str | None  # why the answer is not personal, when it is not

    def without_personal(self, reason: str) -> Customer:
        return replace(self, personal=False, fallback=self.fallback or reason)

    def answer(self, ranked: RankedList, positions: np.ndarray, reminders: list[dict]) -> dict:
        return {
            "customer_id": self.id,
            "items": [
                {"product_id": int(p), "score": float(s), "rank": r, "reason": str(why)}
                for r, (p, s, why) in enumerate(
                    zip(
                        ranked.products[positions],
                        ranked.scores[positions],
                        ranked.reasons[positions],
                        strict=True,
                    ),
                    start=1,
                )
            ],
            "reminders": reminders,
            "personalized": self.personal,
            "fallback": self.fallback,
            "features_stale": self.stale,
        }


@dataclass(frozen=True)
class Champion:
    """One model as served: a request reads it once, so a reload never mixes two versions."""

    name: str
    model: object | None
    version: str | None
    problem: str | None  # why there is no model to serve
    lists: RankedLists | None = None  # a recommender's kept ranked lists

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"


def load_champion(registered_name: str) -> Champion:
    """The registry's champion, or why there is none (missing, an unreadable artifact, or a
    model that says it cannot be used, see `tracking.load_champion`)."""
    try:
        model, version = tracking.load_champion(registered_name)
    except LookupError as error:
        return Champion(registered_name, None, None, scrub(str(error)))
    except Exception as error:  # a corrupt artifact must not take the other model down
        return Champion(
            registered_name,
            None,
            None,
            scrub(
                f"the champion of {registered_name} cannot be loaded "
                f"({type(error).__name__}: {error})"
            ),
        )
    return Champion(registered_name, model, str(version), None)


def _access() -> tuple[Settings, list[bytes]]:
    """The settings the server starts with and the keys it accepts; a refusal ends the start
    with its one line (BentoML prints it) rather than a traceback."""
    settings = Settings()
    try:
        return settings, accepted_keys(settings)
    except UserInputError as error:
        raise SystemExit(f"error: {error}") from None


# Read at import, when BentoML reads the service's options: where it listens, who may call.
STARTING, KEYS = _access()


@bentoml.service(workers=1, traffic={"timeout": 30}, http={"host": str(STARTING.host)})
class Omnishelf:
    def __init__(self) -> None:
        self.settings = Settings()
        announce(self.settings, KEYS)
        self.problems: list[str] = []
        self.readers: dict[str, OnlineReader] = {}
        self.ranker_features = None
        self.warming: str | None = None  # what is being ranked ahead, while it is
        self.demand_snapshot = None  # offline demand features, once the online store failed
        self.demand_history = None  # every offline demand row, once a request asked as_of
        self.snapshot_lock = threading.Lock()
        # The promotions and calendar a forecast reads, per model and tables' version.
        self.plans = cachetools.LRUCache(maxsize=4)
        self.plan_lock = threading.Lock()
        try:
            self.feature_store = open_store(self.settings)
            self.feature_store.get_feature_service("recommender_v1")
            # Product and store profiles change slowly: read once, then only the customer's.
            self.ranker_features = OnlineFeatureLookup(
                self.feature_store, "ranker_v1", cached=("product_profile", "store_daily")
            )
            self.materialised, self.clock = self._read_clock()
        except Exception as error:  # any failure here means "not ready", reported on /readyz
            self.feature_store = None
            self.materialised, self.clock = (), None
            self.problems.append(
                scrub(f"feature store at {self.settings.feast_dir} unusable: {error}")
            )
        self.today = today(self.clock)
        mlflow.set_tracking_uri(self.settings.resolved_tracking_uri)  # read only: no experiment
        self.champions = {
            "recommender": self._with_lists(load_champion(self.settings.recommender_name)),
            "forecaster": load_champion(self.settings.forecaster_name),
        }
        if lists := self.champions["recommender"].lists:  # ready once they are ranked
            self.warming = self.champions["recommender"].label
            threading.Thread(
                target=self._warm, args=(lists, self.today, True), name="warm", daemon=True
            ).start()
        for problem in self._problems():
            log.error("not ready: %s", problem)
        threading.Thread(target=self._watch_aliases, name="alias-watch", daemon=True).start()

    def _with_lists(self, champion: Champion) -> Champion:
        """The recommender with its (empty) ranked lists."""
        if champion.model is None or self.feature_store is None:
            return champion
        # Room for two days of the known customers' lists: a new day's are ranked while the
        # current day's answer (`_follow_clock`).
        capacity = 2 * len(champion.model.history_.customer_index) + EXTRA_LISTS
        lists = RankedLists(
            champion.model, self.ranker_features, self.settings.rank_depth, capacity
        )
        return replace(champion, lists=lists)

    def _warm(self, lists: RankedLists, day: pd.Timestamp, settle: bool = False) -> None:
        """Rank every consenting known customer at their usual store for `day` ahead of their
        requests; then, with `settle`, take what is alive out of the garbage collector's sight."""
        began = time.perf_counter()
        try:
            customers = lists.model.history_.customer_index
            profiles = self._online("recommender_v1", [{CUSTOMER_ID: int(c)} for c in customers])
            if isinstance(profiles, JSONResponse):
                raise ConnectionError("customer profiles unreadable")
            consenting = profiles["opt_out"].to_numpy() == 0
            stamps = pd.Series(
                np.array(profile_stamps(profiles["feature_ts"]))[consenting],
                index=customers[consenting],
            )
            ranked = lists.warm(stamps, day)
            log.warning("ranked %d customers ahead in %.1f s", ranked, time.perf_counter() - began)
        except Exception as error:  # lists are then ranked on first request instead
            log.warning("ranking ahead stopped: %s: %s", type(error).__name__, scrub(str(error)))
        finally:
            if settle:  # the start-up warm: the service is ready once it is done
                settle_heap()
                self.warming = None

    def _problems(self) -> list[str]:
        return self.problems + [c.problem for c in self.champions.values() if c.problem]

    def _readiness(self) -> list[str]:
        warming = [f"ranking known customers ahead ({self.warming})"] if self.warming else []
        return self._problems() + warming

    def _watch_aliases(self) -> None:
        """Serve the new champion when its alias moves (`omnishelf models promote`): load it
        beside the old one, then swap. A version that fails to load leaves the old one serving.
        Then follow the clock (`_follow_clock`)."""
        while True:
            time.sleep(self.settings.reload_seconds)
            swapped = self._reload_moved_champions()
            if self._follow_clock() or swapped:
                settle_heap()  # the old versions' objects are garbage now: collected here

    def _read_clock(self) -> tuple[tuple, datetime | None]:
        """The end of each clock view's newest materialisation (any change is new data), and
        "now" for freshness: the newest of them, or None for the wall clock."""
        ends = tuple(data_clock(self.feature_store, [view]) for view in CLOCK_VIEWS)
        known = [end for end in ends if end is not None]
        return ends, max(known) if known and self.settings.feature_clock == "data" else None

    def _follow_clock(self) -> bool:
        """After a new materialisation (or, on the wall clock, at a new day): the kept product
        and store profiles are read again, and, at a new day, the known customers are ranked
        for it before requests are answered for it. Whether anything moved."""
        if self.feature_store is None:
            return False
        try:
            materialised, clock = self._read_clock()
        except Exception as error:  # the registry is down: keep the day we have
            log.warning("feature registry unreachable: %s", type(error).__name__)
            return False
        day = today(clock)
        if materialised == self.materialised and day == self.today:
            return False
        self.ranker_features.clear()  # views are materialised one by one: cleared after each
        lists = self.champions["recommender"].lists
        if day != self.today and lists is not None:
            self._warm(lists, day)  # the current day is answered meanwhile
        self.materialised, self.clock, self.today = materialised, clock, day
        if lists is not None:
            lists.forget_days_before(day)
        log.warning("data until %s: answering for %s", clock, f"{day:%Y-%m-%d}")
        return True

    def _reload_moved_champions(self) -> bool:
        """Swap in each champion whose alias moved; whether any was."""
        swapped = False
        for family in list(self.champions):
            champion = self.champions[family]
            try:
                current = tracking.champion_version(champion.name)
            except Exception as error:  # the registry is down: keep serving what we have
                log.warning("registry unreachable: %s", type(error).__name__)
                break
            if current is None or str(current.version) == champion.version:
                continue
            loaded = load_champion(champion.name)
            if loaded.model is None:
                log.error("not reloading %s: %s", champion.name, loaded.problem)
                continue
            if family == "recommender" and (loaded := self._with_lists(loaded)).lists:
                self._warm(loaded.lists, self.today)  # the old version serves meanwhile
            self.champions[family] = loaded
            swapped = True
            log.warning("now serving %s (was %s)", loaded.label, champion.version)
        return swapped

    def __is_ready__(self) -> bool:
        if problems := self._readiness():
            # BentoML's /readyz only says "not ready"; raising puts the reason in the body.
            raise HTTPException(status_code=503, detail="; ".join(problems))
        return True

    def _unavailable(self, champion: Champion) -> JSONResponse | None:
        """A 503 naming what is missing (BentoML turns exceptions raised here into 500s)."""
        if champion.model is None or self.feature_store is None:
            message = f"{champion.name} unavailable: {'; '.join(self._problems())}"
            return JSONResponse({"error": message}, status_code=503)
        return None

    def _online(
        self, service: str, rows: list[dict], as_columns: bool = False
    ) -> pd.DataFrame | dict | JSONResponse:
        """Online features (a frame, or a dict of columns), or a 503 naming the feature
        service (a forecast needs them)."""
        try:
            if service not in self.readers:
                self.readers[service] = OnlineReader(self.feature_store, service)
            reader = self.readers[service]
            return (reader.read_columns if as_columns else reader.read)(rows, self.clock)
        except Exception as error:
            log.warning("online read of %s failed: %s", service, type(error).__name__)
            message = f"feature service {service} unavailable ({type(error).__name__})"
            return JSONResponse({"error": message}, status_code=503)

    def _customers(self, lists: RankedLists, refs: list[CustomerRef]) -> list[Customer]:
        """Who each caller means, and whether the answer may be personal: resolved, known to
        the model, consenting (no profile row means consent is unknown: never personalise).
        When the feature store fails, nobody is personal and the fallback says why."""
        ids = [ref.customer_id for ref in refs]
        unknown = "unknown_identity"
        for i, ref in enumerate(refs):
            if ref.customer_id is None:
                ids[i] = self._resolve(ref.channel, ref.channel_customer_id)
                if isinstance(ids[i], JSONResponse):
                    ids[i], unknown = None, UNREACHABLE
        named = [i for i in ids if i is not None]
        profiles = {}
        if named:
            rows = [{CUSTOMER_ID: i} for i in named]
            profiles = self._online("recommender_v1", rows, as_columns=True)
        if isinstance(profiles, JSONResponse):
            return [
                Customer(i, False, None, False, unknown if i is None else UNREACHABLE) for i in ids
            ]
        found = {
            customer: (opt_out, stamp, bool(stale))
            for customer, opt_out, stamp, stale in zip(
                named,
                profiles.get("opt_out", []),
                profile_stamps(profiles.get("feature_ts", [])),
                profiles.get("stale", []),
                strict=True,
            )
        }
        customers = []
        for i in ids:
            if i is None:
                customers.append(Customer(None, False, None, False, unknown))
                continue
            opt_out, stamp, stale = found[i]
            personal = opt_out == 0 and i in lists.known
            fallback = None if personal else "opted_out" if opt_out == 1 else "unknown_customer"
            customers.append(Customer(i, personal, stamp, stale, fallback))
        return customers

    def _recommended(
        self, champion: Champion, refs: list[CustomerRef], body: RecommendOptions
    ) -> list[dict] | JSONResponse:
        """The answer of each customer named in `refs`, or a 4xx for the options."""
        if invalid := self._invalid_options(champion.model, body):
            return invalid
        return self._answers(champion, self._customers(champion.lists, refs), body)

    def _invalid_options(self, model, body: RecommendOptions) -> JSONResponse | None:
        if body.store_id is not None and not model.knows_store(body.store_id):
            return not_found("store_id", f"unknown store_id {body.store_id}")
        for field in ("include_categories", "exclude_categories"):
            unknown = sorted(set(getattr(body, field) or []) - model.categories())
            if unknown:
                return not_found(field, f"unknown categories {unknown[:10]}")
        return None

    def _answers(
        self, champion: Champion, customers: list[Customer], body: RecommendOptions
    ) -> list[dict] | JSONResponse:
        """The k best products each customer may see under the request's rules, with reasons,
        and their reminders: from the kept ranked lists, ranking in full only where the rules
        leave a kept list short."""
        lists: RankedLists = champion.lists
        day = self.today  # read once: a new day mid-request would mix two
        personal = np.array([c.personal for c in customers])
        ids = [c.id for c in customers]
        stamps = [c.stamp for c in customers]
        try:
            ranked = lists.get_many(ids, body.store_id, personal, stamps, day)
        except Exception as error:  # the ranker's features failed: popular still answers
            log.warning("ranker features unavailable: %s", type(error).__name__)
            customers = [c.without_personal(UNREACHABLE) for c in customers]
            personal[:] = False
            ranked = lists.get_many(ids, body.store_id, personal, stamps, day)
        shown = [
            r.allowed(body.exclude_purchased, body.include_categories, body.exclude_categories)
            for r in ranked
        ]
        if body.in_stock_only:
            stocked = self._in_stock(
                body.store_id, [r.products[s] for r, s in zip(ranked, shown, strict=True)]
            )
            if isinstance(stocked, JSONResponse):
                return stocked
            if stocked is None:  # stock unknown: the ranking unfiltered, and the answer says so
                customers = [replace(c, fallback=c.fallback or STOCK_UNKNOWN) for c in customers]
            else:
                shown = [s[keep] for s, keep in zip(shown, stocked, strict=True)]
        answers = []
        for customer, ranked_list, positions in zip(customers, ranked, shown, strict=True):
            if len(positions) < body.k and not ranked_list.complete:
                exact = self._ranked_in_full(champion, customer, body, day)
                if isinstance(exact, JSONResponse):
                    return exact
                customer, ranked_list, positions = exact
            answers.append(
                customer.answer(
                    ranked_list,
                    positions[: body.k],
                    self._reminders(lists, customer, body.reminders, day),
                )
            )
        return answers

    def _ranked_in_full(
        self, champion, customer: Customer, body, day: pd.Timestamp
    ) -> tuple[Customer, RankedList, np.ndarray] | JSONResponse:
        """One customer ranked with the rules applied before the depth cut (kept lists are cut
        first): the rare request whose rules leave fewer than k of a kept list. A failing
        feature read degrades as on the kept path: popular products, or stock unfiltered, each
        flagged on the customer's answer."""
        model = champion.model
        depth = self.settings.rank_depth if body.in_stock_only else body.k

        def rank(personal: bool) -> pd.DataFrame:
            return model.rank(
                np.array([NOT_PERSONAL if customer.id is None else customer.id]),
                depth,
                store_id=body.store_id,
                personalize=np.array([personal]),
                exclude_purchased=body.exclude_purchased,
                include_categories=body.include_categories,
                exclude_categories=body.exclude_categories,
                lookup=self.ranker_features if personal else None,
                today=day,
            )

        try:
            frame = rank(customer.personal)
        except Exception as error:  # the ranker's features failed: popular still answers
            log.warning("ranker features unavailable: %s", type(error).__name__)
            customer = customer.without_personal(UNREACHABLE)
            frame = rank(False)
        ranked_list = as_ranked_list(frame, model.category_, depth)
        positions = np.arange(len(ranked_list.products))
        if body.in_stock_only:
            stocked = self._in_stock(body.store_id, [ranked_list.products])
            if isinstance(stocked, JSONResponse):
                return stocked
            if stocked is None:  # stock unknown: unfiltered, and flagged
                customer = replace(customer, fallback=customer.fallback or STOCK_UNKNOWN)
            else:
                positions = positions[stocked[0]]
        return customer, ranked_list, positions

    @staticmethod
    def _reminders(lists: RankedLists, customer: Customer, n: int, day) -> list[dict]:
        return lists.reminders(customer.id, n, day) if customer.personal and n else []

    @bentoml.api(route="/recommend", input_spec=RecommendRequest)
    def recommend(self, **request) -> RecommendResponse:
        """Next-best products for one customer, each with its reason, and the customer's usual
        products that are due soon; popular products when the customer is new or opted out."""
        body = RecommendRequest(**request)
        champion = self.champions["recommender"]
        if unavailable := self._unavailable(champion):
            return unavailable
        answers = self._recommended(champion, [body], body)
        if isinstance(answers, JSONResponse):
            return answers
        return RecommendResponse(**answers[0], model_version=champion.label)

    @bentoml.api(route="/recommend/batch", input_spec=RecommendBatchRequest)
    def recommend_batch(self, **request) -> RecommendBatchResponse:
        """The same question for up to 1,000 resolved customers: one profile read, and one
        ranking for those whose lists are not kept."""
        body = RecommendBatchRequest(**request)
        champion = self.champions["recommender"]
        if unavailable := self._unavailable(champion):
            return unavailable
        refs = [CustomerRef(customer_id=i) for i in body.customer_ids]
        answers = self._recommended(champion, refs, body)
        if isinstance(answers, JSONResponse):
            return answers
        return RecommendBatchResponse(answers=answers, model_version=champion.label)

    @bentoml.api(route="/reminders", input_spec=RemindersRequest)
    def reminders(self, **request) -> RemindersResponse:
        """The customer's usual products due within the reminder window, most likely first;
        none for customers who opted out or are unknown."""
        body = RemindersRequest(**request)
        champion = self.champions["recommender"]
        if unavailable := self._unavailable(champion):
            return unavailable
        [customer] = self._customers(champion.lists, [body])
        return RemindersResponse(
            customer_id=customer.id,
            reminders=self._reminders(champion.lists, customer, body.n, self.today),
            personalized=customer.personal,
            fallback=customer.fallback,
            model_version=champion.label,
        )

    def _in_stock(
        self, store_id: int, products: list[np.ndarray]
    ) -> list[np.ndarray] | None | JSONResponse:
        """For each array of products, which have stock on hand at the store (store x product
        features): one read for all of them. None when the online store cannot say; a 422
        when the store has no stock levels at all."""
        wanted = np.unique(np.concatenate(products)) if products else np.array([], np.int64)
        rows = [{STORE_ID: store_id, PRODUCT_ID: int(p)} for p in wanted]
        stock = self._online("restock_v1", rows, as_columns=True)
        if isinstance(stock, JSONResponse):
            return None
        on_hand = np.asarray(pd.to_numeric(stock["on_hand_last"], errors="coerce"), dtype=float)
        if np.isnan(on_hand).all() and len(on_hand):
            return JSONResponse(
                {
                    "error": f"no stock levels are known at store {store_id}",
                    "field": "in_stock_only",
                },
                status_code=422,
            )
        stocked = wanted[on_hand > 0]
        return [np.isin(p, stocked) for p in products]

    def _resolve(self, channel: str, channel_customer_id: str) -> int | None | JSONResponse:
        """One ID: the customer a channel identity belongs to (None when unknown or forgotten)."""
        found = self._online("identity_v1", [{IDENTITY_KEY: f"{channel}:{channel_customer_id}"}])
        if isinstance(found, JSONResponse):
            return found
        value = found[CUSTOMER_ID].iloc[0]
        return None if value is None or pd.isna(value) else int(value)

    def _forecast(
        self, model, store_id: int, product_ids: list[int], service: str, as_of=None
    ) -> pd.DataFrame | JSONResponse:
        """The features of `service` at the origin (see `_at_origin`), or an error answer
        (404 naming unknown ids, 422 for an `as_of` outside the data, 503 when the feature
        store fails)."""
        known = model.series_
        if store_id not in known.get_level_values(0):
            return not_found("store_id", f"store_id {store_id} has no forecast series")
        pairs = pd.MultiIndex.from_arrays([[store_id] * len(product_ids), product_ids])
        unknown = [p for p, ok in zip(product_ids, pairs.isin(known), strict=True) if not ok]
        if unknown:
            return not_found(
                "product_ids",
                f"no forecast series at store {store_id} for product_ids {unknown[:10]}",
            )
        return self._at_origin(
            model, [{STORE_ID: store_id, PRODUCT_ID: p} for p in product_ids], service, as_of
        )

    def _at_origin(
        self, model, rows: list[dict], service: str, as_of=None
    ) -> pd.DataFrame | JSONResponse:
        """Features of store x product rows as of the origin, stamped with it: the newest
        materialised ones (online; the offline snapshot when the online store fails, and
        `attrs["fallback"]` says so), or with `as_of` the offline rows of that day."""
        if as_of is not None:
            try:
                newest = self._newest_demand_stamp()
                stamp = origin_stamp(as_of, newest, model.history_start_, model.freq)
            except UserInputError as error:
                return unprocessable("as_of", str(error))
            except Exception as error:  # the registry or the offline table is unreadable
                log.warning("no demand history: %s", type(error).__name__)
                return JSONResponse({"error": "demand history unavailable"}, status_code=503)
            features = self._offline_at(rows, stamp)
        else:
            features = self._online(service, rows)
            if isinstance(features, JSONResponse):
                try:
                    features = self._snapshot(rows)
                except Exception as error:  # no snapshot either: the 503 naming the service
                    log.warning("no offline snapshot: %s", type(error).__name__)
                    return features
                features.attrs["fallback"] = UNREACHABLE
            stamps = pd.to_datetime(features["feature_ts"])
            if stamps.isna().all():
                return JSONResponse(
                    {"error": "no demand features for these series"}, status_code=503
                )
            # The newest materialised day of these series is where they start; a series not
            # materialised that day is forecast from older features, and flagged.
            stamp = stamps.max()
            features["stale"] = features["stale"].to_numpy() | ~(stamps >= stamp).to_numpy()
        features[EVENT_TIMESTAMP] = pd.Timestamp(stamp)
        return features

    def _newest_demand_stamp(self) -> pd.Timestamp:
        """Stamp of the newest materialised demand features (the day after the newest data)."""
        end = data_clock(self.feature_store, [DEMAND_VIEW])
        if end is None:
            raise LookupError("no demand features were materialised")
        return pd.Timestamp(end).floor("D")

    def _offline_at(self, rows: list[dict], stamp: pd.Timestamp) -> pd.DataFrame:
        """The offline demand rows stamped `stamp`, as an online read answers them (a series
        without one is stale). The table is read once, again when a later stamp is asked."""
        with self.snapshot_lock:
            if self.demand_history is None or self.demand_history[1] < stamp:
                table = read_offline_table(self.settings, DEMAND_VIEW)
                indexed = table.set_index([STORE_ID, PRODUCT_ID, EVENT_TIMESTAMP]).sort_index()
                self.demand_history = (indexed, table[EVENT_TIMESTAMP].max())
        history = self.demand_history[0]
        keys = pd.DataFrame(rows)[[STORE_ID, PRODUCT_ID]].assign(**{EVENT_TIMESTAMP: stamp})
        wanted = pd.MultiIndex.from_frame(keys)
        found = history.reindex(wanted).reset_index()
        present = wanted.isin(history.index)
        found["feature_ts"] = found.pop(EVENT_TIMESTAMP).where(present)
        found["stale"] = ~present
        return found

    def _plan(self, champion: Champion) -> ForecastPlan:
        """The promotions and calendar of the workspace's tables as they are now, for the
        champion's products: read again when a table changes (a new import)."""
        model = champion.model
        files = [self.settings.tables_dir / f"{name}.parquet" for name in PLAN_TABLES]
        version = tuple(path.stat().st_mtime_ns if path.exists() else None for path in files)
        key = (champion.label, version)
        with self.plan_lock:
            if key not in self.plans:
                products = model.series_.get_level_values(PRODUCT_ID).to_numpy()
                self.plans[key] = read_plan(self.settings.tables_dir, products, model.country)
            return self.plans[key]

    def _snapshot(self, rows: list[dict]) -> pd.DataFrame:
        """The newest offline row of each store x product (what the online store was loaded
        from; both demand services read the one view), as an online read answers it. Read on
        the first failure of the online store, then kept."""
        with self.snapshot_lock:  # one read of the table, however many requests wait for it
            if self.demand_snapshot is None:
                table = read_offline_table(self.settings, DEMAND_VIEW)
                newest = table.sort_values(EVENT_TIMESTAMP).drop_duplicates(
                    [STORE_ID, PRODUCT_ID], keep="last"
                )
                ttl = self.feature_store.get_feature_view(DEMAND_VIEW).ttl
                self.demand_snapshot = (newest.set_index([STORE_ID, PRODUCT_ID]), ttl)
        newest, ttl = self.demand_snapshot
        keys = pd.MultiIndex.from_frame(pd.DataFrame(rows)[[STORE_ID, PRODUCT_ID]])
        found = newest.reindex(keys).reset_index()
        found["feature_ts"] = found.pop(EVENT_TIMESTAMP)
        now = (
            pd.Timestamp(self.clock) if self.clock else pd.Timestamp.now(tz="UTC").tz_localize(None)
        )
        too_old = (now - found["feature_ts"] > ttl).to_numpy() if ttl else False
        found["stale"] = found["feature_ts"].isna().to_numpy() | too_old  # none: stale too
        return found

    @bentoml.api(route="/forecast", input_spec=ForecastRequest)
    def forecast(self, **request) -> ForecastResponse:
        """Units each product will sell at the store per period (mean, P10, P50, P90) over the
        coming days; with `promotion`, also the forecast without it (what-if)."""
        body = ForecastRequest(**request)
        champion = self.champions["forecaster"]
        if unavailable := self._unavailable(champion):
            return unavailable
        model = champion.model
        features = self._forecast(model, body.store_id, body.product_ids, "demand_v1", body.as_of)
        if isinstance(features, JSONResponse):
            return features
        planned = self._plan(champion)
        periods = math.ceil(body.horizon_days / PERIOD_DAYS[model.freq])
        first = features[EVENT_TIMESTAMP].iloc[0].date()
        last = first + timedelta(days=periods * PERIOD_DAYS[model.freq] - 1)
        promotion = body.promotion
        if promotion is not None and (promotion.end_date < first or promotion.start_date > last):
            return JSONResponse(
                {
                    "error": f"promotion {promotion.start_date}..{promotion.end_date} does not "
                    f"overlap the forecast {first}..{last}",
                    "field": "promotion",
                },
                status_code=422,
            )
        predicted = model.predict(model_inputs(model, features), planned)
        if promotion is not None:
            added = pd.DataFrame(
                {
                    STORE_ID: body.store_id,
                    PRODUCT_ID: promotion.product_ids,
                    # Only the days inside the forecast matter; clipping keeps dates in range.
                    "start_date": pd.Timestamp(max(promotion.start_date, first)),
                    "end_date": pd.Timestamp(min(promotion.end_date, last)),
                    "promo_type": promotion.promo_type,
                    "price": np.nan if promotion.price is None else promotion.price,
                }
            )
            without = predicted[FORECAST].to_numpy()
            predicted = model.predict(model_inputs(model, features), planned, what_if=added)
            predicted["without"] = without
        predicted = predicted[predicted["step"] <= periods]
        forecasts = [
            {
                "product_id": int(product),
                "periods": [
                    {
                        "period_start": row.period.date(),
                        "units": round(float(row.forecast), 3),
                        "p10": round(float(row.p10), 3),
                        "p50": round(float(row.p50), 3),
                        "p90": round(float(row.p90), 3),
                        "units_without_promotion": round(float(row.without), 3)
                        if body.promotion is not None
                        else None,
                    }
                    for row in group.itertuples()
                ],
            }
            for product, group in predicted.groupby(PRODUCT_ID, sort=False)
        ]
        return ForecastResponse(
            store_id=body.store_id,
            freq=model.freq,
            origin=origin_day(features),
            forecasts=forecasts,
            stale_product_ids=_stale(features),
            fallback=features.attrs.get("fallback"),
            model_version=champion.label,
        )

    @bentoml.api(route="/restock", input_spec=RestockRequest)
    def restock(self, **request) -> RestockResponse:
        """Order quantities: the service-level quantile of demand over lead time + a 7-day
        review, minus stock on hand and on order, rounded to packs and minimum orders."""
        body = RestockRequest(**request)
        champion = self.champions["forecaster"]
        if unavailable := self._unavailable(champion):
            return unavailable
        model = champion.model
        features = self._forecast(model, body.store_id, body.product_ids, "restock_v1", body.as_of)
        if isinstance(features, JSONResponse):
            return features
        n = len(body.product_ids)
        at_origin = model_inputs(model, features).assign(
            on_hand=body.on_hand,
            on_order=body.on_order or [0.0] * n,
            lead_time_days=body.lead_time_days,
            pack_size=body.pack_size or [1] * n,
            min_order_qty=body.min_order_qty or [0] * n,
        )
        planned = plan_orders(model, at_origin, body.service_level, self._plan(champion))
        orders = [
            {
                "product_id": int(row.product_id),
                "on_hand": row.on_hand,
                "on_order": row.on_order,
                "expected_demand": round(float(row.expected_demand), 3),
                "order_up_to": round(float(row.order_up_to), 3),
                "order_quantity": int(row.order_quantity),
            }
            for row in planned.itertuples()
        ]
        return RestockResponse(
            store_id=body.store_id,
            origin=origin_day(features),
            lead_time_days=body.lead_time_days,
            service_level=body.service_level,
            orders=orders,
            stale_product_ids=_stale(features),
            fallback=features.attrs.get("fallback"),
            model_version=champion.label,
        )

    @bentoml.api(route="/restock/batch", input_spec=RestockBatchRequest)
    def restock_batch(self, **request) -> RestockBatchResponse:
        """Order quantities for up to 10,000 store x product pairs across stores, each with its
        own stock, lead time, pack and minimum order: one feature read and one forecast."""
        body = RestockBatchRequest(**request)
        champion = self.champions["forecaster"]
        if unavailable := self._unavailable(champion):
            return unavailable
        model = champion.model
        pairs = pd.DataFrame(body.model_dump()["pairs"])  # one pass in pydantic-core
        keys = pd.MultiIndex.from_frame(pairs[[STORE_ID, PRODUCT_ID]])
        unknown = keys[~keys.isin(model.series_)]
        if len(unknown):
            return not_found(
                "pairs",
                f"{len(unknown)} pairs have no forecast series (store_id, product_id): "
                f"{[tuple(int(v) for v in pair) for pair in unknown[:10]]}",
            )
        features = self._at_origin(
            model, pairs[[STORE_ID, PRODUCT_ID]].to_dict("records"), "restock_v1", body.as_of
        )
        if isinstance(features, JSONResponse):
            return features
        inputs = model_inputs(model, features).assign(
            **{c: pairs[c].to_numpy() for c in RESTOCK_INPUTS}
        )
        planned = plan_orders(model, inputs, body.service_level, self._plan(champion))
        lines = (
            planned[ORDER_COLUMNS]
            .round({"expected_demand": 3, "order_up_to": 3})
            .astype({STORE_ID: int, PRODUCT_ID: int, "lead_time_days": int, "order_quantity": int})
        )
        stale = features.loc[features["stale"], [STORE_ID, PRODUCT_ID]].astype(int)
        return RestockBatchResponse(
            origin=origin_day(features),
            service_level=body.service_level,
            orders=lines.to_dict("records"),
            stale_pairs=list(stale.itertuples(index=False, name=None)),
            fallback=features.attrs.get("fallback"),
            model_version=champion.label,
        )


Omnishelf.add_asgi_middleware(RequestGuard, keys=KEYS, open_docs=STARTING.open_docs)
