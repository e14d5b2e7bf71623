"""Request and response bodies of the service, with the limits the OpenAPI page shows."""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, model_validator

from features.contract import CHANNELS

MAX_PRODUCTS = 1000
MAX_ID = 2**63 - 1  # ids are int64 in the feature store


def above(bound: float) -> dict:
    """`gt=bound` as OpenAPI 3.0 writes it, for the spec BentoML serves (3.0): a flag on
    `minimum`, where pydantic writes JSON Schema's `exclusiveMinimum: bound`, which 3.0 tools
    refuse (schemathesis cannot fuzz the operation)."""
    return {"minimum": bound, "exclusiveMinimum": True}


MAX_REMINDERS = 20


def _unique(field: str, what: str = "an id", key=None):
    """A validator refusing repeated values (or `key`s of them) in `field`, naming a few."""

    def check(values: list) -> list:
        keys = values if key is None else [key(v) for v in values]
        if len(set(keys)) != len(keys):
            repeated = sorted(k for k, n in Counter(keys).items() if n > 1)
            raise ValueError(f"{field} must not repeat {what}; repeated: {repeated[:10]}")
        return values

    return check


Categories = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=100)]], Field(min_length=1, max_length=50)
]


class RecommendOptions(BaseModel):
    """What a caller may ask of a ranked answer, for one customer or many."""

    k: int = Field(10, ge=1, le=100, description="how many products")
    store_id: int | None = Field(
        None, ge=0, le=MAX_ID, description="store whose popular products answer new customers"
    )
    exclude_purchased: bool = Field(False, description="leave out products the customer bought")
    in_stock_only: bool = Field(
        False, description="only products with stock on hand at `store_id` (needs store_id)"
    )
    include_categories: Categories | None = Field(
        None, description="only products of these categories"
    )
    exclude_categories: Categories | None = Field(None, description="never these categories")
    reminders: int = Field(
        3, ge=0, le=MAX_REMINDERS, description="how many due repurchases to add (0: none)"
    )

    @model_validator(mode="after")
    def _stock_is_known_per_store(self) -> RecommendOptions:
        if self.in_stock_only and self.store_id is None:
            raise ValueError("in_stock_only needs store_id: stock is known per store")
        return self


class CustomerRef(BaseModel):
    """A customer named by the resolved id or by a channel's own id (One ID resolves it)."""

    customer_id: int | None = Field(
        None, ge=0, le=MAX_ID, description="resolved customer id (or give channel identity)"
    )
    channel: Literal[CHANNELS] | None = Field(None, description="channel of `channel_customer_id`")
    channel_customer_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="the caller's own user id (loyalty card, web account, app user, ...)",
    )

    @model_validator(mode="after")
    def _one_way_to_name_the_customer(self) -> CustomerRef:
        by_identity = self.channel is not None or self.channel_customer_id is not None
        if by_identity and (self.channel is None or self.channel_customer_id is None):
            raise ValueError("give both channel and channel_customer_id")
        if by_identity == (self.customer_id is not None):
            raise ValueError("give either customer_id or channel + channel_customer_id")
        return self


class RecommendRequest(RecommendOptions, CustomerRef):
    pass


MAX_BATCH_CUSTOMERS = 1000


class RecommendBatchRequest(RecommendOptions):
    """The same question for many resolved customers (a campaign, a nightly e-mail)."""

    customer_ids: Annotated[
        list[Annotated[int, Field(ge=0, le=MAX_ID)]],
        Field(min_length=1, max_length=MAX_BATCH_CUSTOMERS),
        AfterValidator(_unique("customer_ids")),
    ]


class RemindersRequest(CustomerRef):
    n: int = Field(5, ge=1, le=MAX_REMINDERS, description="how many due repurchases at most")


class RecommendedItem(BaseModel):
    product_id: int
    score: float
    rank: int
    reason: str = Field(..., description="why it is shown, e.g. 'bought every ~9 days, ...'")


class Reminder(BaseModel):
    product_id: int
    probability: float = Field(..., description="chance of buying it within `within_days`")
    within_days: int
    due_in_days: float = Field(..., description="days until the customer's usual cycle is due")
    reason: str


class CustomerAnswer(BaseModel):
    customer_id: int | None = Field(None, description="resolved customer; null when unknown")
    items: list[RecommendedItem]
    reminders: list[Reminder] = Field([], description="usual products due soon (personal only)")
    personalized: bool
    fallback: str | None = Field(
        None,
        description="what the answer fell back on: why it is not personalised, or "
        "stock_unavailable when in_stock_only could not be applied",
    )
    features_stale: bool = Field(
        False, description="the customer's features are older than their TTL"
    )


class RecommendResponse(CustomerAnswer):
    model_version: str


class RecommendBatchResponse(BaseModel):
    answers: list[CustomerAnswer] = Field(..., description="one per customer, in request order")
    model_version: str


class RemindersResponse(BaseModel):
    customer_id: int | None = Field(None, description="resolved customer; null when unknown")
    reminders: list[Reminder]
    personalized: bool = Field(..., description="false: no reminders (opted out or unknown)")
    fallback: str | None = Field(None, description="why there are no personal reminders")
    model_version: str


ProductIds = Annotated[
    list[Annotated[int, Field(ge=0, le=MAX_ID)]],
    Field(min_length=1, max_length=MAX_PRODUCTS),
    AfterValidator(_unique("product_ids")),
]


PROMO_TYPES = ("display", "mailer", "display_mailer", "price_cut")


class PlannedPromotion(BaseModel):
    """A promotion the caller plans: the forecast answers with and without it."""

    product_ids: ProductIds = Field(..., description="promoted products (of the request's)")
    start_date: date
    end_date: date = Field(..., description="last day of the promotion (inclusive)")
    promo_type: Literal[PROMO_TYPES]
    price: Annotated[float, Field(gt=0, allow_inf_nan=False, json_schema_extra=above(0))] | None = (
        Field(None, description="promoted price")
    )

    @model_validator(mode="after")
    def _ends_after_it_starts(self) -> PlannedPromotion:
        if self.end_date < self.start_date:
            raise ValueError("end_date must not be before start_date")
        return self


class ForecastRequest(BaseModel):
    store_id: int = Field(..., ge=0, le=MAX_ID)
    product_ids: ProductIds
    horizon_days: int = Field(28, ge=1, le=28, description="days ahead, at most 28")
    as_of: date | None = Field(
        None,
        description="the last day of data to forecast from (weekly data: the last whole week "
        "ending by it); default the newest day materialised in the online store",
    )
    promotion: PlannedPromotion | None = Field(
        None, description="what-if: forecast with this promotion and without it"
    )

    @model_validator(mode="after")
    def _promotes_requested_products(self) -> ForecastRequest:
        if self.promotion is not None:
            others = sorted(set(self.promotion.product_ids) - set(self.product_ids))
            if others:
                raise ValueError(f"promotion.product_ids {others[:10]} are not in product_ids")
        return self


class ForecastPeriod(BaseModel):
    period_start: date
    units: float = Field(..., description="expected units (the mean)")
    p10: float
    p50: float
    p90: float
    units_without_promotion: float | None = Field(
        None, description="what-if only: expected units without the planned promotion"
    )


class ProductForecast(BaseModel):
    product_id: int
    periods: list[ForecastPeriod]


class ForecastResponse(BaseModel):
    store_id: int
    freq: str = Field(..., description="D (daily) or W (weekly, starting Monday) periods")
    origin: date = Field(
        ..., description="the last day of data the forecast starts after: every period is later"
    )
    forecasts: list[ProductForecast]
    stale_product_ids: list[int] = Field(
        [], description="products whose features are older than their TTL: treat with care"
    )
    fallback: str | None = Field(
        None,
        description="feature_store_unavailable: the online store failed and the newest offline "
        "features answered instead",
    )
    model_version: str


NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class RestockRequest(BaseModel):
    store_id: int = Field(..., ge=0, le=MAX_ID)
    product_ids: ProductIds
    on_hand: list[NonNegative] = Field(
        ..., description="units on hand, one per product, not negative"
    )
    on_order: list[NonNegative] | None = Field(
        None, description="units ordered and not yet delivered, one per product (default 0)"
    )
    pack_size: list[Annotated[int, Field(ge=1, le=10_000)]] | None = Field(
        None, description="units per supplier pack, one per product (default 1)"
    )
    min_order_qty: list[Annotated[int, Field(ge=0, le=1_000_000)]] | None = Field(
        None, description="supplier minimum order in units, one per product (default 0)"
    )
    lead_time_days: int = Field(2, ge=0, le=21)
    service_level: float = Field(0.95, gt=0.5, le=0.999, json_schema_extra=above(0.5))
    as_of: date | None = Field(
        None,
        description="the last day of data to forecast from (weekly data: the last whole week "
        "ending by it); default the newest day materialised in the online store",
    )

    @model_validator(mode="after")
    def _one_value_per_product(self) -> RestockRequest:
        for name in ("on_hand", "on_order", "pack_size", "min_order_qty"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.product_ids):
                raise ValueError(
                    f"{name} has {len(values)} values for {len(self.product_ids)} product_ids"
                )
        return self


class RestockLine(BaseModel):
    product_id: int
    on_hand: float
    on_order: float
    expected_demand: float = Field(..., description="units expected over lead time + review")
    order_up_to: float = Field(..., description="S: the service-level quantile of that demand")
    order_quantity: int


class RestockResponse(BaseModel):
    store_id: int
    origin: date = Field(
        ..., description="the last day of data the forecast starts after: every period is later"
    )
    lead_time_days: int
    service_level: float
    orders: list[RestockLine]
    stale_product_ids: list[int] = Field(
        [], description="products whose features are older than their TTL: treat with care"
    )
    fallback: str | None = Field(
        None,
        description="feature_store_unavailable: the online store failed and the newest offline "
        "features answered instead",
    )
    model_version: str


MAX_BATCH_PAIRS = 10_000


class RestockPair(BaseModel):
    store_id: int = Field(..., ge=0, le=MAX_ID)
    product_id: int = Field(..., ge=0, le=MAX_ID)
    on_hand: NonNegative = Field(..., description="units on hand, not negative")
    on_order: NonNegative = Field(0.0, description="units ordered and not yet delivered")
    lead_time_days: int = Field(2, ge=0, le=21)
    pack_size: int = Field(1, ge=1, le=10_000, description="units per supplier pack")
    min_order_qty: int = Field(0, ge=0, le=1_000_000, description="supplier minimum order")


class RestockBatchRequest(BaseModel):
    """Order quantities for many stores at once, as a replenishment job sends them."""

    pairs: Annotated[
        list[RestockPair],
        Field(min_length=1, max_length=MAX_BATCH_PAIRS),
        AfterValidator(_unique("pairs", "a store x product", lambda p: (p.store_id, p.product_id))),
    ]
    service_level: float = Field(0.95, gt=0.5, le=0.999, json_schema_extra=above(0.5))
    as_of: date | None = Field(
        None,
        description="the last day of data to forecast from (weekly data: the last whole week "
        "ending by it); default the newest day materialised in the online store",
    )


class RestockBatchLine(RestockLine):
    store_id: int
    lead_time_days: int


class RestockBatchResponse(BaseModel):
    origin: date = Field(
        ..., description="the last day of data the forecast starts after: every period is later"
    )
    service_level: float
    orders: list[RestockBatchLine]
    stale_pairs: list[tuple[int, int]] = Field(
        [], description="store x product pairs whose features are older than their TTL"
    )
    fallback: str | None = Field(
        None,
        description="feature_store_unavailable: the online store failed and the newest offline "
        "features answered instead",
    )
    model_version: str
