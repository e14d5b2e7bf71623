"""The one Feast definitions module: entities, sources, feature views and feature services.

Source paths are relative: Feast resolves them against the repo path of the store that applies
them (data/feast/ by default), so the same definitions serve every profile.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Int64

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

customer_activity_source = FileSource(
    name="customer_activity_source",
    path=f"{OFFLINE_DIR}/customer_activity.parquet",
    timestamp_field="event_timestamp",
)
store_product_demand_source = FileSource(
    name="store_product_demand_source",
    path=f"{OFFLINE_DIR}/store_product_demand.parquet",
    timestamp_field="event_timestamp",
)

customer_activity = FeatureView(
    name="customer_activity",
    entities=[customer],
    ttl=timedelta(days=14),
    schema=[
        Field(name="orders_28d", dtype=Float32, description="orders in the last 28 days"),
        Field(name="orders_91d", dtype=Float32, description="orders in the last 91 days"),
        Field(name="net_sales_91d", dtype=Float32, description="spend in the last 91 days"),
        Field(name="days_since_last_order", dtype=Float32, description="recency in days"),
        Field(name="opt_out", dtype=Int64, description="1 if opted out of personalisation"),
    ],
    source=customer_activity_source,
    online=True,
    description="weekly snapshots of each customer's recent activity",
    owner=OWNER,
    tags={"window": "28d/91d", "snapshot": "weekly"},
)

store_product_demand = FeatureView(
    name="store_product_demand",
    entities=[store, product],
    ttl=timedelta(days=14),
    schema=[
        *[
            Field(
                name=f"units_lag_{lag}",
                dtype=Float32,
                description=f"units sold {lag} period(s) ago",
            )
            for lag in (1, 2, 3, 4, 7)
        ],
        Field(name="units_mean_4", dtype=Float32, description="mean units over the last 4 periods"),
        Field(
            name="units_mean_13", dtype=Float32, description="mean units over the last 13 periods"
        ),
        Field(
            name="units_std_13", dtype=Float32, description="std of units over the last 13 periods"
        ),
        Field(
            name="units_nonzero_13",
            dtype=Float32,
            description="share of the last 13 periods with sales",
        ),
        Field(name="price_last", dtype=Float32, description="last observed unit price"),
    ],
    source=store_product_demand_source,
    online=True,
    description="demand history of each active store x product series, per period (day or week)",
    owner=OWNER,
    tags={"window": "1-13 periods", "snapshot": "per period"},
)

recommender_v1 = FeatureService(
    name="recommender_v1",
    features=[customer_activity],
    description="customer context for /recommend",
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
    description="the forecaster's inputs and the demand spread for order-up-to levels",
    owner=OWNER,
)

DEFINITIONS = [
    customer,
    store,
    product,
    customer_activity,
    store_product_demand,
    recommender_v1,
    demand_v1,
    restock_v1,
]
FEATURE_TABLES = {
    customer_activity.name: customer_activity_source.path,
    store_product_demand.name: store_product_demand_source.path,
}
