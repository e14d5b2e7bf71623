"""The omnishelf service: next-best-product, demand forecast and restock orders over HTTP.

Models come from the MLflow registry (the `champion` alias) and features from the Feast online
store, both once at start-up. BentoML adds /healthz, /livez, /readyz, /metrics and the OpenAPI
page at /docs.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import bentoml
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from serving.guard import RequestGuard
from serving.schemas import (
    ForecastRequest,
    ForecastResponse,
    RecommendRequest,
    RecommendResponse,
    RestockBatchRequest,
    RestockBatchResponse,
    RestockRequest,
    RestockResponse,
)

with bentoml.importing():
    import mlflow
    import numpy as np
    import pandas as pd

    from features.contract import CUSTOMER_ID, PRODUCT_ID, STORE_ID
    from features.engineering import EVENT_TIMESTAMP, PERIOD_DAYS
    from features.feature_store import (
        OnlineFeatureLookup,
        OnlineReader,
        data_clock,
        open_store,
    )
    from features.identity import IDENTITY_KEY
    from features.settings import Settings
    from training import tracking
    from training.forecaster import FORECAST
    from training.recommender import cycle_reason
    from training.restock import ORDER_COLUMNS, plan_orders

log = logging.getLogger(__name__)
# Views whose newest stamp is "now" on the data clock (identities are stamped when resolved).
RANK_DEPTH = 200  # products ranked before a stock filter picks the k in stock
CLOCK_VIEWS = ["customer_profile", "store_daily", "store_product_demand", "product_profile"]


def _stale(features: pd.DataFrame) -> list[int]:
    return [int(p) for p in features.loc[features["stale"], PRODUCT_ID]]


# What a restock batch pair adds to the forecaster's inputs for `plan_orders`.
RESTOCK_INPUTS = ("on_hand", "on_order", "lead_time_days", "pack_size", "min_order_qty")


def model_inputs(model, features: pd.DataFrame) -> pd.DataFrame:
    """The columns a forecaster reads, from online features as of its origin."""
    return features[[STORE_ID, PRODUCT_ID, EVENT_TIMESTAMP, *model.input_names_]]


def not_found(field: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=404)


@dataclass(frozen=True)
class Champion:
    """One model as served: a request reads it once, so a reload never mixes two versions."""

    name: str
    model: object | None
    version: str | None
    problem: str | None  # why there is no model to serve

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"


def load_champion(registered_name: str) -> Champion:
    """The registry's champion, or why there is none (missing, or an unreadable artifact)."""
    try:
        model, version = tracking.load_champion(registered_name)
    except LookupError as error:
        return Champion(registered_name, None, None, str(error))
    except Exception as error:  # a corrupt artifact must not take the other model down
        return Champion(
            registered_name,
            None,
            None,
            f"the champion of {registered_name} cannot be loaded ({type(error).__name__}: {error})",
        )
    return Champion(registered_name, model, str(version), None)


@bentoml.service(workers=1, traffic={"timeout": 30})
class Omnishelf:
    def __init__(self) -> None:
        self.settings = Settings()
        self.problems: list[str] = []
        self.readers: dict[str, OnlineReader] = {}
        self.ranker_features = None
        mlflow.set_tracking_uri(self.settings.resolved_tracking_uri)  # read only: no experiment
        self.champions = {
            family: load_champion(name)
            for family, name in (
                ("recommender", self.settings.recommender_name),
                ("forecaster", self.settings.forecaster_name),
            )
        }
        threading.Thread(target=self._watch_aliases, name="alias-watch", daemon=True).start()
        try:
            self.feature_store = open_store(self.settings)
            self.feature_store.get_feature_service("recommender_v1")
            # Product and store profiles change slowly: read once, then only the customer's.
            self.ranker_features = OnlineFeatureLookup(
                self.feature_store, "ranker_v1", cached=("product_profile", "store_daily")
            )
            # "Now" for freshness: the newest materialised data, or the wall clock in production.
            self.clock = (
                data_clock(self.feature_store, CLOCK_VIEWS)
                if self.settings.feature_clock == "data"
                else None
            )
        except Exception as error:  # any failure here means "not ready", reported on /readyz
            self.feature_store = None
            self.problems.append(f"feature store at {self.settings.feast_dir} unusable: {error}")
        for problem in self._problems():
            log.error("not ready: %s", problem)

    def _problems(self) -> list[str]:
        return self.problems + [c.problem for c in self.champions.values() if c.problem]

    def _watch_aliases(self) -> None:
        """Serve the new champion when its alias moves (`omnishelf models promote`): load it
        beside the old one, then swap. A version that fails to load leaves the old one serving."""
        while True:
            time.sleep(self.settings.reload_seconds)
            for family, champion in list(self.champions.items()):
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
                self.champions[family] = loaded
                log.warning("now serving %s (was %s)", loaded.label, champion.version)

    def __is_ready__(self) -> bool:
        if problems := self._problems():
            # BentoML's /readyz only says "not ready"; raising puts the reason in the body.
            raise HTTPException(status_code=503, detail="; ".join(problems))
        return True

    def _unavailable(self, champion: Champion) -> JSONResponse | None:
        """A 503 naming what is missing (BentoML turns exceptions raised here into 500s)."""
        if champion.model is None or self.feature_store is None:
            message = f"{champion.name} unavailable: {'; '.join(self._problems())}"
            return JSONResponse({"error": message}, status_code=503)
        return None

    def _online(self, service: str, rows: list[dict]) -> pd.DataFrame | JSONResponse:
        """Online features, or a 503 naming the feature service (a forecast needs them)."""
        try:
            if service not in self.readers:
                self.readers[service] = OnlineReader(self.feature_store, service)
            return self.readers[service].read(rows, self.clock)
        except Exception as error:
            log.warning("online read of %s failed: %s", service, type(error).__name__)
            message = f"feature service {service} unavailable ({type(error).__name__})"
            return JSONResponse({"error": message}, status_code=503)

    @bentoml.api(route="/recommend", input_spec=RecommendRequest)
    def recommend(self, **request) -> RecommendResponse:
        """Next-best products for one customer, each with its reason, and the customer's usual
        products that are due soon; popular products when the customer is new or opted out."""
        body = RecommendRequest(**request)
        champion = self.champions["recommender"]
        if unavailable := self._unavailable(champion):
            return unavailable
        model = champion.model
        if body.store_id is not None and not model.knows_store(body.store_id):
            return not_found("store_id", f"unknown store_id {body.store_id}")
        for field in ("include_categories", "exclude_categories"):
            unknown = sorted(set(getattr(body, field) or []) - model.categories())
            if unknown:
                return not_found(field, f"unknown categories {unknown[:10]}")
        customer_id = body.customer_id
        if customer_id is None:
            customer_id = self._resolve(body.channel, body.channel_customer_id)
            if isinstance(customer_id, JSONResponse):
                return customer_id
        stale, consent, fallback = False, None, None
        if customer_id is None:
            fallback = "unknown_identity"
        else:
            profile = self._online("recommender_v1", [{CUSTOMER_ID: customer_id}])
            if isinstance(profile, JSONResponse):  # popularity still answers; say why
                fallback = "feature_store_unavailable"
            else:
                consent, stale = profile["opt_out"].iloc[0], bool(profile["stale"].iloc[0])
        # No row means consent is unknown: treat it like an opt-out, never personalise.
        opted_out = consent is None or consent != 0
        customers = np.array([-1 if customer_id is None else customer_id])
        rules = {
            "store_id": body.store_id,
            "exclude_purchased": body.exclude_purchased,
            "include_categories": body.include_categories,
            "exclude_categories": body.exclude_categories,
        }
        # The stock filter runs after ranking, so rank deeper when it may drop products.
        depth = RANK_DEPTH if body.in_stock_only else body.k
        try:
            ranked = model.rank(
                customers,
                depth,
                personalize=np.array([not opted_out]),
                lookup=self.ranker_features,
                **rules,
            )
        except Exception as error:  # the ranker's features failed: popular still answers
            log.warning("ranker features unavailable: %s", type(error).__name__)
            fallback = "feature_store_unavailable"
            ranked = model.rank(customers, depth, personalize=np.array([False]), **rules)
        if body.in_stock_only:
            ranked = self._in_stock(body.store_id, ranked)
            if isinstance(ranked, JSONResponse):
                return ranked
        ranked = ranked.head(body.k)
        # From who the customer is, not from the rows left: filters may leave none.
        personalized = fallback is None and bool(
            model.personal(customers, np.array([not opted_out]))[0]
        )
        if fallback is None and not personalized and customer_id is not None:
            fallback = "opted_out" if consent == 1 else "unknown_customer"
        items = [
            {
                "product_id": int(row.product_id),
                "score": float(row.score),
                "rank": rank,
                "reason": row.reason,
            }
            for rank, row in enumerate(ranked.itertuples(), start=1)
        ]
        reminders = []
        if personalized and body.reminders:
            due = model.due(customers, body.reminders)
            reminders = [
                {
                    "product_id": int(row.product_id),
                    "probability": round(float(row.probability), 4),
                    "within_days": model.reminders.days,
                    "due_in_days": round(float(row.due_in_days), 1),
                    "reason": cycle_reason(row.cycle_days, row.days_since_bought),
                }
                for row in due.itertuples()
            ]
        return RecommendResponse(
            customer_id=customer_id,
            items=items,
            reminders=reminders,
            personalized=personalized,
            fallback=fallback,
            features_stale=stale,
            model_version=champion.label,
        )

    def _in_stock(self, store_id: int, ranked: pd.DataFrame) -> pd.DataFrame | JSONResponse:
        """The ranked products with stock on hand at the store, from store x product features."""
        rows = [{STORE_ID: store_id, PRODUCT_ID: int(p)} for p in ranked[PRODUCT_ID]]
        stock = self._online("restock_v1", rows)
        if isinstance(stock, JSONResponse):
            return stock
        on_hand = pd.to_numeric(stock["on_hand_last"], errors="coerce").to_numpy()
        if np.isnan(on_hand).all() and len(on_hand):
            return JSONResponse(
                {
                    "error": f"no stock levels are known at store {store_id}",
                    "field": "in_stock_only",
                },
                status_code=422,
            )
        return ranked[on_hand > 0]

    def _resolve(self, channel: str, channel_customer_id: str) -> int | None | JSONResponse:
        """One ID: the customer a channel identity belongs to (None when unknown or forgotten)."""
        found = self._online("identity_v1", [{IDENTITY_KEY: f"{channel}:{channel_customer_id}"}])
        if isinstance(found, JSONResponse):
            return found
        value = found[CUSTOMER_ID].iloc[0]
        return None if value is None or pd.isna(value) else int(value)

    def _forecast(
        self, model, store_id: int, product_ids: list[int], service: str
    ) -> pd.DataFrame | JSONResponse:
        """The online features of `service` as of `model`'s origin, or an error answer (404
        naming unknown ids, 503 when the feature store fails)."""
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
            model, [{STORE_ID: store_id, PRODUCT_ID: p} for p in product_ids], service
        )

    def _at_origin(self, model, rows: list[dict], service: str) -> pd.DataFrame | JSONResponse:
        """Online features of store x product rows, stamped with the model's origin."""
        features = self._online(service, rows)
        if isinstance(features, JSONResponse):
            return features
        features[EVENT_TIMESTAMP] = model.next_origin_
        return features

    @bentoml.api(route="/forecast", input_spec=ForecastRequest)
    def forecast(self, **request) -> ForecastResponse:
        """Units each product will sell at the store per period (mean, P10, P50, P90) over the
        coming days; with `promotion`, also the forecast without it (what-if)."""
        body = ForecastRequest(**request)
        champion = self.champions["forecaster"]
        if unavailable := self._unavailable(champion):
            return unavailable
        model = champion.model
        features = self._forecast(model, body.store_id, body.product_ids, "demand_v1")
        if isinstance(features, JSONResponse):
            return features
        planned = model.planned_promotions_
        periods = math.ceil(body.horizon_days / PERIOD_DAYS[model.freq])
        first = model.next_origin_.date()
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
            predicted = model.predict(
                model_inputs(model, features), pd.concat([planned, added], ignore_index=True)
            )
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
            origin=model.next_origin_.date(),
            forecasts=forecasts,
            stale_product_ids=_stale(features),
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
        features = self._forecast(model, body.store_id, body.product_ids, "restock_v1")
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
        planned = plan_orders(model, at_origin, body.service_level, model.planned_promotions_)
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
            lead_time_days=body.lead_time_days,
            service_level=body.service_level,
            orders=orders,
            stale_product_ids=_stale(features),
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
            model, pairs[[STORE_ID, PRODUCT_ID]].to_dict("records"), "restock_v1"
        )
        if isinstance(features, JSONResponse):
            return features
        inputs = model_inputs(model, features).assign(
            **{c: pairs[c].to_numpy() for c in RESTOCK_INPUTS}
        )
        planned = plan_orders(model, inputs, body.service_level, model.planned_promotions_)
        lines = (
            planned[ORDER_COLUMNS]
            .round({"expected_demand": 3, "order_up_to": 3})
            .astype({STORE_ID: int, PRODUCT_ID: int, "lead_time_days": int, "order_quantity": int})
        )
        stale = features.loc[features["stale"], [STORE_ID, PRODUCT_ID]].astype(int)
        return RestockBatchResponse(
            service_level=body.service_level,
            orders=lines.to_dict("records"),
            stale_pairs=list(stale.itertuples(index=False, name=None)),
            model_version=champion.label,
        )


Omnishelf.add_asgi_middleware(RequestGuard, api_key=Settings().api_key)
