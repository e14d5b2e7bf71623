"""The real `bentoml serve` process: answers, fallbacks and precise 4xx errors."""

import sqlite3
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest

from features.identity import resolved_tables
from features.settings import Settings
from pipelines import cli, customers
from tests.integration.conftest import (
    free_port,
    run_cli,
    start_server,
    stop,
    wait_until_answering,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ids(workspace):
    settings = workspace["settings"]
    tables, identity_map, _ = resolved_tables(settings, ["transactions", "customers", "stores"])
    demand = pd.read_parquet(settings.feast_dir / "offline" / "store_product_demand.parquet")
    store_id = int(demand["store_id"].iloc[0])
    products = demand.loc[demand["store_id"] == store_id, "product_id"].unique()[:3]
    customers = tables["customers"]
    sales = tables["transactions"]
    opted_out = customers.loc[customers["opt_out"], "customer_id"]
    buyers = sales.loc[~sales["customer_id"].isin(opted_out), "customer_id"].drop_duplicates()
    # Customers with one identity each, for the merge test; `known` stays out of it.
    single = identity_map.groupby("customer_id")["identity_key"].transform("size") == 1
    loners = identity_map[single & identity_map["customer_id"].isin(buyers.iloc[1:])]
    return {
        "store_id": store_id,
        "products": [int(p) for p in products],
        "known": int(buyers.iloc[0]),
        "known_identity": identity_map.loc[
            identity_map["customer_id"] == buyers.iloc[0], "identity_key"
        ].iloc[0],
        "loners": loners[["identity_key", "customer_id"]].head(2).to_numpy().tolist(),
        "opted_out": int(opted_out.iloc[0]),
        "stores": set(tables["stores"]["store_id"]),
    }


def _by_identity(key: str, **body) -> dict:
    channel, channel_customer_id = key.split(":", 1)
    return {"channel": channel, "channel_customer_id": channel_customer_id, **body}


def test_ready(service):
    assert service.get("/readyz").status_code == 200
    assert service.get("/healthz").status_code == 200


def test_openapi_page_lists_the_endpoints(service):
    spec = service.get("/docs.json").json()
    for route in (
        "/recommend",
        "/recommend/batch",
        "/reminders",
        "/forecast",
        "/restock",
        "/restock/batch",
    ):
        assert route in spec["paths"]


def test_known_customer_gets_personalised_products(service, ids):
    answer = service.post("/recommend", json={"customer_id": ids["known"], "k": 7}).json()
    assert answer["personalized"] is True and answer["fallback"] is None, answer
    products = [item["product_id"] for item in answer["items"]]
    assert len(products) == 7 == len(set(products))
    assert [item["rank"] for item in answer["items"]] == list(range(1, 8))
    assert answer["model_version"].startswith("omnishelf-recommender/")


def test_each_item_says_why_and_usual_products_come_back_as_reminders(service, ids):
    answer = service.post(
        "/recommend", json={"customer_id": ids["known"], "k": 10, "reminders": 3}
    ).json()
    assert all(item["reason"] for item in answer["items"])
    assert any(item["reason"].startswith("bought every ~") for item in answer["items"]), answer
    assert 1 <= len(answer["reminders"]) <= 3
    for reminder in answer["reminders"]:
        assert 0 <= reminder["probability"] <= 1 and reminder["within_days"] == 7
        assert reminder["due_in_days"] >= 0 and reminder["reason"].startswith("bought every")


def test_category_and_stock_rules_hold(service, ids, workspace):
    products = workspace["tables"]["products"].set_index("product_id")["category"]
    category = sorted(products.unique())[0]
    only = service.post(
        "/recommend",
        json={"customer_id": ids["known"], "k": 5, "include_categories": [category]},
    ).json()
    assert only["items"] and {products[i["product_id"]] for i in only["items"]} == {category}
    without = service.post(
        "/recommend",
        json={"customer_id": ids["known"], "k": 5, "exclude_categories": [category]},
    ).json()
    assert category not in {products[i["product_id"]] for i in without["items"]}
    store = ids["store_id"]
    in_stock = service.post(
        "/recommend",
        json={"customer_id": ids["known"], "k": 5, "store_id": store, "in_stock_only": True},
    ).json()
    assert in_stock["items"], in_stock
    demand = pd.read_parquet(
        workspace["settings"].feast_dir / "offline" / "store_product_demand.parquet"
    )
    latest = demand[demand["store_id"] == store].sort_values("event_timestamp")
    on_hand = latest.groupby("product_id")["on_hand_last"].last()
    assert all(on_hand[i["product_id"]] > 0 for i in in_stock["items"])
    response = service.post(
        "/recommend", json={"customer_id": ids["known"], "include_categories": ["no such"]}
    )
    assert response.status_code == 404 and response.json()["field"] == "include_categories"


def test_rules_that_leave_a_kept_list_short_rank_in_full(service, ids, workspace):
    """A category holds 10 of the 40 products, fewer of them are in the customer's kept 15:
    eight of the category can only come from ranking the request in full."""
    products = workspace["tables"]["products"].set_index("product_id")["category"]
    category = sorted(products.unique())[1]
    body = {"customer_id": ids["known"], "k": 8, "include_categories": [category]}
    answer = service.post("/recommend", json=body).json()
    assert len(answer["items"]) == 8 and answer["personalized"], answer
    assert {products[i["product_id"]] for i in answer["items"]} == {category}
    ranks = service.post("/recommend", json={"customer_id": ids["known"], "k": 40}).json()
    order = [i["product_id"] for i in ranks["items"] if products[i["product_id"]] == category]
    assert [i["product_id"] for i in answer["items"]] == order[:8]


def test_batch_answers_each_customer_as_recommend_does(service, ids):
    customers = [ids["known"], ids["opted_out"], 99999999]
    body = {"k": 6, "reminders": 2, "exclude_purchased": True}
    batch = service.post("/recommend/batch", json={"customer_ids": customers, **body})
    assert batch.status_code == 200, batch.text
    answers = batch.json()["answers"]
    assert [a["customer_id"] for a in answers] == customers
    assert batch.json()["model_version"].startswith("omnishelf-recommender/")
    for customer, answer in zip(customers, answers, strict=True):
        alone = service.post("/recommend", json={"customer_id": customer, **body}).json()
        assert answer == {k: v for k, v in alone.items() if k != "model_version"}
    assert [a["fallback"] for a in answers] == [None, "opted_out", "unknown_customer"]
    assert answers[0]["reminders"] and not answers[1]["reminders"]


def test_reminders_are_the_recommend_answers_reminders(service, ids):
    answer = service.post("/reminders", json={"customer_id": ids["known"], "n": 2}).json()
    with_items = service.post(
        "/recommend", json={"customer_id": ids["known"], "reminders": 2}
    ).json()
    assert answer["reminders"] == with_items["reminders"] and answer["personalized"]
    assert 1 <= len(answer["reminders"]) <= 2
    by_identity = service.post("/reminders", json=_by_identity(ids["known_identity"], n=2))
    assert by_identity.json()["reminders"] == answer["reminders"]
    opted_out = service.post("/reminders", json={"customer_id": ids["opted_out"]}).json()
    assert opted_out["reminders"] == [] and opted_out["fallback"] == "opted_out"


@contextmanager
def online_table_lost(settings, view: str):
    """A real fault of the online store: the view's table disappears from the SQLite file the
    server reads, and comes back afterwards."""
    table = f"{settings.feast_project}_{view}"
    with sqlite3.connect(settings.feast_dir / "online_store.db") as connection:
        connection.execute(f"ALTER TABLE {table} RENAME TO {table}_lost")
    try:
        yield
    finally:
        with sqlite3.connect(settings.feast_dir / "online_store.db") as connection:
            connection.execute(f"ALTER TABLE {table}_lost RENAME TO {table}")


def test_without_the_online_demand_features_the_offline_snapshot_answers(service, ids, workspace):
    store, products = ids["store_id"], ids["products"]
    forecast = {"store_id": store, "product_ids": products, "horizon_days": 7}
    restock = {"store_id": store, "product_ids": products, "on_hand": [1.0] * len(products)}
    batch = {"pairs": [{"store_id": store, "product_id": p, "on_hand": 1.0} for p in products]}
    stocked = {"customer_id": ids["known"], "k": 5, "store_id": store, "in_stock_only": True}
    demand = [("/forecast", forecast), ("/restock", restock), ("/restock/batch", batch)]
    online = {
        route: service.post(route, json=body).json()
        for route, body in [*demand, ("/recommend", stocked)]
    }
    assert all(answer.get("fallback") is None for answer in online.values()), online
    with online_table_lost(workspace["settings"], "store_product_demand"):
        for route, body in demand:
            answer = service.post(route, json=body)
            assert answer.status_code == 200, answer.text
            # The snapshot is what the online store was loaded from: the same numbers.
            assert answer.json() == {**online[route], "fallback": "feature_store_unavailable"}
        unfiltered = service.post("/recommend", json=stocked).json()
        assert unfiltered["fallback"] == "stock_unavailable" and unfiltered["personalized"]
        assert len(unfiltered["items"]) == 5
    assert service.post("/forecast", json=forecast).json() == online["/forecast"]


def test_exclude_purchased_leaves_out_bought_products(service, ids, workspace):
    sales = workspace["tables"]["transactions"]
    bought = set(sales.loc[sales["customer_id"] == ids["known"], "product_id"])
    answer = service.post(
        "/recommend", json={"customer_id": ids["known"], "k": 5, "exclude_purchased": True}
    ).json()
    assert answer["items"] and not bought & {item["product_id"] for item in answer["items"]}


def test_unknown_customer_gets_popular_products_in_store(service, ids):
    answer = service.post(
        "/recommend", json={"customer_id": 99999999, "k": 5, "store_id": ids["store_id"]}
    ).json()
    assert answer["personalized"] is False
    assert answer["fallback"] == "unknown_customer"
    assert len(answer["items"]) == 5


def test_a_channel_identity_gets_its_customers_answer(service, ids):
    by_id = service.post("/recommend", json={"customer_id": ids["known"], "k": 5}).json()
    by_identity = service.post("/recommend", json=_by_identity(ids["known_identity"], k=5))
    assert by_identity.status_code == 200
    assert by_identity.json()["customer_id"] == ids["known"]
    assert by_identity.json()["items"] == by_id["items"]


def test_an_unknown_identity_gets_popular_products(service):
    answer = service.post("/recommend", json=_by_identity("app:never-seen", k=4)).json()
    assert answer["customer_id"] is None and answer["personalized"] is False
    assert answer["fallback"] == "unknown_identity" and len(answer["items"]) == 4


def test_a_merge_reaches_the_next_recommendation_without_retraining(service, ids, workspace):
    (key_a, customer_a), (key_b, customer_b) = ids["loners"]
    survivor = min(customer_a, customer_b)
    absorbed_key = key_b if customer_b > customer_a else key_a
    before = service.post("/recommend", json=_by_identity(absorbed_key, k=5)).json()
    assert before["customer_id"] != survivor
    customers.merge(workspace["settings"], key_a, key_b, reason="test")
    after = service.post("/recommend", json=_by_identity(absorbed_key, k=5)).json()
    # The merge also rewrote the survivor's profile features, which the ranker reads.
    expected = service.post("/recommend", json={"customer_id": survivor, "k": 5}).json()
    assert after["customer_id"] == survivor
    assert after["items"] == expected["items"] and after["personalized"]


def test_opted_out_customer_is_never_personalised(service, ids):
    answer = service.post("/recommend", json={"customer_id": ids["opted_out"], "k": 5}).json()
    assert answer["personalized"] is False
    assert answer["fallback"] == "opted_out"


def test_forecast_covers_the_horizon_per_product(service, ids):
    body = {"store_id": ids["store_id"], "product_ids": ids["products"], "horizon_days": 10}
    answer = service.post("/forecast", json=body).json()
    assert answer["freq"] == "D"
    assert [f["product_id"] for f in answer["forecasts"]] == ids["products"]
    for forecast in answer["forecasts"]:
        assert len(forecast["periods"]) == 10
        units = np.array([p["units"] for p in forecast["periods"]])
        assert (units >= 0).all() and units.sum() > 0
        # The origin is the last day of data: the forecast starts the day after.
        first = pd.Timestamp(answer["origin"]) + pd.Timedelta(days=1)
        assert forecast["periods"][0]["period_start"] == first.date().isoformat()
        for period in forecast["periods"]:
            assert 0 <= period["p10"] <= period["p50"] <= period["p90"]
            assert period["units_without_promotion"] is None


def test_forecast_what_if_answers_with_and_without_the_planned_promotion(service, ids, workspace):
    promoted, other = ids["products"][:2]
    # At a discount, as every promotion of the synthetic data the model learnt from is: without
    # a price the what-if is one the model never saw, and its effect there is within noise.
    list_price = workspace["tables"]["products"].set_index("product_id")["price"][promoted]
    origin = service.post(
        "/forecast", json={"store_id": ids["store_id"], "product_ids": [promoted]}
    ).json()["origin"]
    start = (pd.Timestamp(origin) + pd.Timedelta(days=1)).date().isoformat()
    end = (pd.Timestamp(origin) + pd.Timedelta(days=7)).date().isoformat()
    body = {
        "store_id": ids["store_id"],
        "product_ids": [promoted, other],
        "horizon_days": 14,
        "promotion": {
            "product_ids": [promoted],
            "start_date": start,
            "end_date": end,
            "promo_type": "display_mailer",
            "price": round(0.8 * float(list_price), 2),
        },
    }
    answer = service.post("/forecast", json=body).json()
    by_product = {f["product_id"]: f["periods"] for f in answer["forecasts"]}
    week = by_product[promoted][:7]
    assert sum(p["units"] for p in week) > sum(p["units_without_promotion"] for p in week)
    # Outside the promotion's days nothing changes; inside them the other product may move too,
    # since the promotion also counts in what else the store promotes.
    later = by_product[promoted][7:] + by_product[other][7:]
    assert all(p["units"] == pytest.approx(p["units_without_promotion"]) for p in later)
    body["promotion"]["product_ids"] = [424242]
    response = service.post("/forecast", json=body)
    assert response.status_code == 400 and "promotion.product_ids" in response.text
    body["promotion"] |= {"product_ids": [promoted], "start_date": "9999-01-01"}
    body["promotion"]["end_date"] = "9999-12-31"
    response = service.post("/forecast", json=body)
    assert response.status_code == 422 and response.json()["field"] == "promotion"


def test_restock_orders_what_stock_does_not_cover(service, ids):
    body = {
        "store_id": ids["store_id"],
        "product_ids": ids["products"][:2],
        "on_hand": [0, 10_000],
        "lead_time_days": 2,
        "service_level": 0.95,
    }
    answer = service.post("/restock", json=body).json()
    empty, full = answer["orders"]
    assert empty["order_quantity"] >= 1
    assert empty["order_quantity"] == pytest.approx(np.ceil(empty["order_up_to"]), abs=1)
    assert empty["order_up_to"] >= empty["expected_demand"] > 0
    assert full["order_quantity"] == 0


def test_restock_rounds_to_packs_and_minimum_orders(service, ids):
    body = {
        "store_id": ids["store_id"],
        "product_ids": ids["products"][:2],
        "on_hand": [0, 0],
        "pack_size": [12, 1],
        "min_order_qty": [0, 500],
    }
    packed, minimum = service.post("/restock", json=body).json()["orders"]
    assert packed["order_quantity"] % 12 == 0 and packed["order_quantity"] >= 12
    assert packed["order_quantity"] - packed["order_up_to"] < 12
    assert minimum["order_quantity"] == 500


def test_restock_endpoint_and_batch_command_agree(service, ids, workspace, tmp_path):
    settings = workspace["settings"]
    store = ids["store_id"]
    lead_time = int(
        workspace["tables"]["stores"].set_index("store_id").loc[store, "lead_time_days"]
    )
    products = ids["products"]
    on_hand = [0.0, 3.0, 7.0][: len(products)]
    stock = pd.DataFrame({"store_id": store, "product_id": products, "on_hand": on_hand})
    stock.to_csv(tmp_path / "stock.csv", index=False)
    done = run_cli(
        settings,
        "restock",
        "--stock",
        str(tmp_path / "stock.csv"),
        "--output",
        str(tmp_path / "orders.csv"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    batch = pd.read_csv(tmp_path / "orders.csv").set_index(["store_id", "product_id"])
    body = {
        "store_id": store,
        "product_ids": products,
        "on_hand": on_hand,
        "lead_time_days": lead_time,
    }
    for line in service.post("/restock", json=body).json()["orders"]:
        row = batch.loc[(store, line["product_id"])]
        assert line["order_quantity"] == row["order_quantity"]
        assert line["order_up_to"] == pytest.approx(row["order_up_to"], abs=1e-3)


def test_restock_batch_spans_stores_and_agrees_with_restock(service, workspace):
    series = pd.read_parquet(
        workspace["settings"].feast_dir / "offline" / "store_product_demand.parquet"
    )[["store_id", "product_id"]].drop_duplicates()
    stores = series["store_id"].unique()[:2]
    pairs = series[series["store_id"].isin(stores)].groupby("store_id").head(3)
    body = {
        "pairs": [
            {
                "store_id": int(row.store_id),
                "product_id": int(row.product_id),
                "on_hand": float(i),
                "lead_time_days": 1 + i % 3,
                "pack_size": 1 + i % 2,
            }
            for i, row in enumerate(pairs.itertuples())
        ]
    }
    answer = service.post("/restock/batch", json=body)
    assert answer.status_code == 200, answer.text
    lines = answer.json()["orders"]
    assert [(line["store_id"], line["product_id"]) for line in lines] == [
        (p["store_id"], p["product_id"]) for p in body["pairs"]
    ]
    assert answer.json()["model_version"].startswith("omnishelf-forecaster/")
    for pair, line in zip(body["pairs"], lines, strict=True):
        single = service.post(
            "/restock",
            json={
                "store_id": pair["store_id"],
                "product_ids": [pair["product_id"]],
                "on_hand": [pair["on_hand"]],
                "lead_time_days": pair["lead_time_days"],
                "pack_size": [pair["pack_size"]],
            },
        ).json()["orders"][0]
        assert line["order_quantity"] == single["order_quantity"]
        assert line["order_up_to"] == pytest.approx(single["order_up_to"])
        assert line["lead_time_days"] == pair["lead_time_days"]
    unknown = service.post(
        "/restock/batch",
        json={"pairs": [body["pairs"][0], {"store_id": 999_999, "product_id": 1, "on_hand": 0}]},
    )
    assert unknown.status_code == 404 and unknown.json()["field"] == "pairs"
    assert "(999999, 1)" in unknown.json()["error"]


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/recommend", {"customer_id": 1, "k": 0}, "k"),
        ("/recommend", {"customer_id": 1, "k": 101}, "k"),
        ("/recommend", {"customer_id": "abc"}, "customer_id"),
        ("/recommend", {"k": 5}, "customer_id"),
        ("/recommend", {"channel": "web"}, "channel_customer_id"),
        ("/recommend", {"channel": "fax", "channel_customer_id": "1"}, "channel"),
        ("/recommend", {"customer_id": 1, "channel": "web", "channel_customer_id": "x"}, "either"),
        ("/recommend", {"customer_id": 1, "in_stock_only": True}, "store_id"),
        ("/recommend", {"customer_id": 1, "reminders": 21}, "reminders"),
        ("/recommend", {"customer_id": 1, "include_categories": []}, "include_categories"),
        ("/forecast", {"store_id": 1, "product_ids": [1], "horizon_days": 29}, "horizon_days"),
        ("/forecast", {"store_id": 1, "product_ids": []}, "product_ids"),
        ("/forecast", {"store_id": 1, "product_ids": [5, 5]}, "product_ids"),
        ("/restock", {"store_id": 1, "product_ids": [1], "on_hand": [-1]}, "on_hand"),
        (
            "/restock",
            {"store_id": 1, "product_ids": [1], "on_hand": [1], "pack_size": [0]},
            "pack_size",
        ),
        (
            "/forecast",
            {
                "store_id": 1,
                "product_ids": [1],
                "promotion": {
                    "product_ids": [1],
                    "start_date": "2024-05-02",
                    "end_date": "2024-05-01",
                    "promo_type": "display",
                },
            },
            "end_date",
        ),
        (
            "/restock",
            {"store_id": 1, "product_ids": [1], "on_hand": [1], "service_level": 1.5},
            "service_level",
        ),
        (
            "/restock",
            {"store_id": 1, "product_ids": [1], "on_hand": [1], "service_level": 0.5},
            "service_level",
        ),
        ("/recommend/batch", {"customer_ids": []}, "customer_ids"),
        ("/recommend/batch", {"customer_ids": [3, 4, 3]}, "repeat"),
        ("/recommend/batch", {"customer_ids": list(range(1001))}, "customer_ids"),
        ("/recommend/batch", {"customer_ids": [1], "k": 0}, "k"),
        ("/reminders", {"customer_id": 1, "n": 0}, "n"),
        ("/reminders", {"channel": "web"}, "channel_customer_id"),
        ("/restock/batch", {"pairs": []}, "pairs"),
        ("/restock/batch", {"pairs": [{"store_id": 1, "product_id": 2}]}, "on_hand"),
        (
            "/restock/batch",
            {"pairs": [{"store_id": 1, "product_id": 2, "on_hand": 1, "lead_time_days": -1}]},
            "lead_time_days",
        ),
        (
            "/restock/batch",
            {"pairs": [{"store_id": 1, "product_id": 2, "on_hand": 1}] * 2},
            "repeat",
        ),
        (
            "/restock/batch",
            {"pairs": [{"store_id": 1, "product_id": p, "on_hand": 1} for p in range(10_001)]},
            "pairs",
        ),
    ],
)
def test_invalid_requests_get_400_naming_the_field(service, route, body, field):
    response = service.post(route, json=body)
    assert response.status_code == 400
    assert field in str([(error["loc"], error["msg"]) for error in response.json()["detail"]])
    assert "Traceback" not in response.text


def test_mismatched_stock_levels_are_rejected(service, ids):
    body = {"store_id": ids["store_id"], "product_ids": ids["products"][:2], "on_hand": [1]}
    response = service.post("/restock", json=body)
    assert response.status_code == 400 and "on_hand" in response.text


def test_malformed_json_is_a_400(service):
    response = service.post(
        "/recommend", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400


def test_unknown_ids_get_404_naming_the_field(service, ids):
    unknown_store = max(ids["stores"]) + 100
    response = service.post("/recommend", json={"customer_id": 1, "store_id": unknown_store})
    assert response.status_code == 404 and response.json()["field"] == "store_id"
    response = service.post(
        "/forecast", json={"store_id": ids["store_id"], "product_ids": [424242]}
    )
    assert response.status_code == 404 and response.json()["field"] == "product_ids"
    assert "424242" in response.json()["error"]
    response = service.post(
        "/restock", json={"store_id": unknown_store, "product_ids": [1], "on_hand": [0]}
    )
    assert response.status_code == 404 and response.json()["field"] == "store_id"


def test_without_a_champion_the_service_is_not_ready_and_says_why(tmp_path):
    port = free_port()
    server = start_server(tmp_path, port)
    try:
        import httpx

        wait_until_answering(server, f"http://127.0.0.1:{port}")
        response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert response.status_code == 503
        assert "no 'champion' version of model" in response.text
        answer = httpx.post(
            f"http://127.0.0.1:{port}/recommend", json={"customer_id": 1}, timeout=10
        )
        assert answer.status_code == 503 and "omnishelf train" in answer.text
    finally:
        stop(server)


def test_readyz_and_the_log_never_carry_the_tracking_password(
    tmp_path, empty_postgresql_database, record_property
):
    password = "s3cret-pw"
    # PostgreSQL here trusts local connections, so the password is accepted and never checked:
    # a registry with a password in its URI and no champion in it.
    uri = f"postgresql+psycopg://postgres:{password}@127.0.0.1:5432/{empty_postgresql_database}"
    port = free_port()
    server = cli.start_server(Settings(home=tmp_path), port, {"OMNISHELF_TRACKING_URI": uri})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_answering(server, url)
        import httpx

        ready = httpx.get(f"{url}/readyz", timeout=10)
    finally:
        stop(server)
    log = (tmp_path / "data" / "server.log").read_text()
    leaks = ready.text.count(password) + log.count(password)
    record_property("readyz_secret_leaks", leaks)  # benchmarks/freshness.py
    assert leaks == 0
    # Still says what is wrong, and where (the URI without its password), on both.
    assert ready.status_code == 503
    where = f"in the registry at postgresql+psycopg://postgres:***@127.0.0.1:5432/{empty_postgresql_database}"
    assert where in ready.text
    assert where in log
