"""The one Feast definitions module: entities, sources, feature views and feature services.

Source paths are relative: Feast resolves them against the repo path of the store that applies
them (data/feast/ by default), so the same definitions serve every profile.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Int64, String

OWNER = "ml-platform@omnishelf"
OFFLINE_DIR = "offline"

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="a resolved customer (one id across channels)",
)
store = Entity(
    name="store", join_keys=["store_id"], value_type=ValueType.INT64, description="a store"
)
product = Entity(
    name="product", join_keys=["product_id"], value_type=ValueType.INT64, description="a product"
)
identity = Entity(
    name="identity",
    join_keys=["identity_key"],
    value_type=ValueType.STRING,
    description="a channel identity, channel:channel_customer_id (loyalty card, web, app, ...)",
)


def _source(name: str) -> FileSource:
    return FileSource(
        name=f"{name}_source",
        path=f"{OFFLINE_DIR}/{name}.parquet",
        timestamp_field="event_timestamp",
    )


def _floats(described: dict[str, str]) -> list[Field]:
    return [Field(name=name, dtype=Float32, description=text) for name, text in described.items()]


customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=timedelta(days=14),
    schema=[
        *_floats(
            {
                **{f"orders_{w}d": f"distinct orders in the last {w} days" for w in (7, 28, 91)},
                **{f"net_sales_{w}d": f"spend in the last {w} days" for w in (7, 28, 91)},
                "days_since_last_order": "recency: days from the last order to the snapshot",
                **{
                    f"share_{c}_91d": f"share of the last 91 days' orders placed in {c}"
                    for c in ("store", "web", "app", "mini_program")
                },
                "mean_days_between_orders": "mean gap between distinct order days, all history",
                "std_days_between_orders": "spread of those gaps",
                "churn_risk": "days since last order / the customer's own mean gap (>1: overdue)",
            }
        ),
        Field(
            name="top_categories",
            dtype=String,
            description="up to 3 most-bought categories of the last 91 days, '|'-joined",
        ),
        Field(name="opt_out", dtype=Int64, description="1 if opted out of personalisation"),
    ],
    source=_source("customer_profile"),
    online=True,
    description="recency, frequency, monetary value, channel mix and cycle of each customer",
    owner=OWNER,
    tags={"window": "7/28/91 days", "snapshot": "weekly and the last day"},
)

store_daily = FeatureView(
    name="store_daily",
    entities=[store],
    ttl=timedelta(days=3),
    schema=_floats(
        {
            "units_per_day_28d": "sales velocity: units per day over the last 28 days",
            "baskets_per_day_28d": "distinct orders per day over the last 28 days",
            "avg_basket_value_28d": "net sales per order over the last 28 days",
            "promo_share_28d": "share of the last 28 days' lines sold with a discount",
            "stockout_rate_28d": "share of tracked product-days at zero stock (inventory only)",
        }
    ),
    source=_source("store_daily"),
    online=True,
    description="daily activity of each store",
    owner=OWNER,
    tags={"window": "28 days", "snapshot": "daily"},
)

store_product_demand = FeatureView(
    name="store_product_demand",
    entities=[store, product],
    ttl=timedelta(days=14),
    schema=_floats(
        {
            **{f"units_lag_{lag}": f"units sold {lag} period(s) ago" for lag in range(1, 9)},
            **{
                f"units_mean_{w}d": f"mean units per period over the last {w} days"
                for w in (7, 28, 56, 91, 182)
            },
            **{
                f"units_std_{w}d": f"std of units per period over the last {w} days"
                for w in (7, 28, 56, 91, 182)
            },
            **{
                f"units_nonzero_{w}d": f"share of the last {w} days' periods with sales"
                for w in (91, 182)
            },
            "units_mean_all": "mean units per period since the first period of the data",
            "units_nonzero_all": "share of periods with sales since the first period of the data",
            "periods_since_sale": "periods since the last period with sales (1 = the last one)",
            "product_trend": "the product's units at all stores: 28-day mean / 182-day mean",
            "store_trend": "the store's units of all its series: 28-day mean / 182-day mean",
            "price_last": "last observed unit price",
            "promo_share_28d": "share of the last 28 days under a promotion",
            "on_promo_last": "1 if a promotion ran on the period's last day",
            **{
                f"{kind}_share_182d": f"share of the last 182 days with a {kind.replace('_', ' ')}"
                for kind in ("display", "mailer", "price_cut")
            },
            "on_hand_last": "units on hand at the start of the period's last day (inventory only)",
            "days_of_cover": "days the stock on hand lasts at the 28-day sales rate",
        }
    ),
    source=_source("store_product_demand"),
    online=True,
    description="demand history of each active store x product series, per period (day or week)",
    owner=OWNER,
    tags={"window": "1-8 periods / 7-182 days", "snapshot": "per period"},
)

product_profile = FeatureView(
    name="product_profile",
    entities=[product],
    ttl=timedelta(days=35),
    schema=[
        Field(name="category", dtype=String, description="product category"),
        *_floats(
            {
                "price": "median paid unit price over the last 91 days (else list price)",
                "buyers_91d": "distinct customers over the last 91 days",
                "popularity_rank": "rank by buyers over the last 91 days (1 = most)",
                "repeat_purchase_rate": "share of buyers who bought it in two or more orders",
            }
        ),
    ],
    source=_source("product_profile"),
    online=True,
    description="what each product is and how it sells",
    owner=OWNER,
    tags={"window": "91 days / all history", "snapshot": "every 28 days and the last day"},
)

identity_resolution = FeatureView(
    name="identity_resolution",
    entities=[identity],
    ttl=timedelta(0),  # an identity's customer does not expire; merges overwrite it
    schema=[
        Field(name="customer_id", dtype=Int64, description="resolved customer of the identity"),
        Field(name="reason", dtype=String, description="strongest evidence: phone_hash, link, ..."),
    ],
    source=_source("identity_resolution"),
    online=True,
    description="One ID: which customer each channel identity belongs to",
    owner=OWNER,
    tags={"snapshot": "on every resolution"},
)

recommender_v1 = FeatureService(
    name="recommender_v1",
    features=[customer_profile],
    description="customer context for /recommend (consent, recency, cycle, channel mix)",
    owner=OWNER,
)
ranker_v1 = FeatureService(
    name="ranker_v1",
    features=[customer_profile, product_profile, store_daily],
    description="customer, product and store context of each next-best-product candidate",
    owner=OWNER,
)
demand_v1 = FeatureService(
    name="demand_v1",
    features=[store_product_demand],
    description="inputs of the demand forecaster",
    owner=OWNER,
)
restock_v1 = FeatureService(
    name="restock_v1",
    features=[store_product_demand],
    description="the forecaster's inputs, the demand spread and stock on hand for order-up-to",
    owner=OWNER,
)

identity_v1 = FeatureService(
    name="identity_v1",
    features=[identity_resolution],
    description="One ID lookup: channel identity -> customer",
    owner=OWNER,
)

VIEWS = [customer_profile, store_daily, store_product_demand, product_profile, identity_resolution]
DEFINITIONS = [
    customer,
    store,
    product,
    identity,
    *VIEWS,
    recommender_v1,
    ranker_v1,
    demand_v1,
    restock_v1,
    identity_v1,
]
FEATURE_TABLES = {view.name: view.batch_source.path for view in VIEWS}
