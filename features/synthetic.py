"""A seeded synthetic omnichannel retailer whose demand signals are known, for fast tests and demos.

Customers have a home store, a channel mix with one identity per channel, and favourite products
bought on their own repurchase cycles, plus exploration of popular products. Demand follows weekday,
yearly, holiday, retail-event and promotion factors. Stores run a weekly order-up-to policy that is
deliberately imperfect, so stockouts censor sales: `true_demand` holds what customers wanted and
`transactions` what they could buy.

Memory and time grow with stores x products x days (a few dense arrays of that shape).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import holidays
import numpy as np
import pandas as pd

from features.contract import (
    CATEGORY,
    CHANNEL,
    CHANNELS,
    CUSTOMER_ID,
    DATE,
    DISCOUNT,
    NET_SALES,
    ORDER_ID,
    PRODUCT_ID,
    QUANTITY,
    STORE_ID,
    TS,
    check_references,
    conform,
)

NAME = "synthetic"
FREQ = "D"
FIRST_PRODUCT_ID = 1000

# Range of the discount off list price, by promo type.
PROMO_DISCOUNTS = {
    "price_cut": (0.15, 0.35),
    "display": (0.0, 0.10),
    "mailer": (0.05, 0.20),
    "display_mailer": (0.10, 0.30),
}
REGIONS = ("north", "south", "east", "west", "central")
IDENTITY_PREFIXES = {"store": "LC", "web": "web-u", "app": "app-", "mini_program": "mp-o"}
# Relative order volume by hour of day (0..23): stores open 7-22, online peaks in the evening.
STORE_HOURS = np.array([0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 5, 4, 4, 5, 7, 7, 5, 3, 1, 0, 0])
ONLINE_HOURS = np.array(
    [1, 0.5, 0.3, 0.2, 0.2, 0.3, 1, 2, 3, 3, 3, 3, 4, 3, 3, 3, 3, 4, 5, 6, 7, 7, 5, 3]
)
# A scheduled repurchase slips up to two days either way, towards busier weekdays; a five-day
# window is wide enough for the day-of-week profile of repurchases to follow weekday_factors.
SLIP_DAYS = 2


def _black_friday(year: int) -> dt.date:
    november = dt.date(year, 11, 1)
    thanksgiving = november + dt.timedelta(days=(3 - november.weekday()) % 7 + 21)
    return thanksgiving + dt.timedelta(days=1)


EVENTS = {
    "Black Friday": _black_friday,
    "Cyber Monday": lambda year: _black_friday(year) + dt.timedelta(days=3),
    "618": lambda year: dt.date(year, 6, 18),
    "Double 11": lambda year: dt.date(year, 11, 11),
}


@dataclass(frozen=True)
class SyntheticConfig:
    """Size, period and demand knobs of the synthetic retailer; rates are per day unless named."""

    n_customers: int = 1500
    n_stores: int = 8
    n_products: int = 300
    n_categories: int = 12
    start: str = "2024-01-01"
    days: int = 364
    country: str = "US"  # for the `holidays` package
    seed: int = 7
    n_departments: int = 4
    brands_per_category: int = 4
    # Customers
    channel_adoption: tuple[float, float, float, float] = (0.85, 0.35, 0.4, 0.2)  # CHANNELS order
    opt_out_rate: float = 0.03
    # Identity keys: how often a person has a phone/email, how often an identity carries it, and
    # how often a non-primary identity declares a link to the person's primary one.
    has_phone: float = 0.9
    has_email: float = 0.8
    key_shared: float = 0.6
    link_declared: float = 0.3
    favourites_mean: float = 6.0
    category_focus: float = 0.3  # Dirichlet alpha of category tastes; small = few categories
    cycle_mean_days: float = 16.0
    cycle_shape: float = 4.0  # gamma shape of the product repurchase cycles
    cycle_jitter: float = 0.05  # sd of a repurchase's timing, as a share of its cycle
    explore_rate: float = 0.05  # exploration wants per customer per day
    # Calendar
    weekday_factors: tuple[float, ...] = (0.85, 0.8, 0.85, 0.9, 1.05, 1.35, 1.2)  # Mon..Sun
    yearly_amplitude: float = 0.15
    yearly_peak_doy: int = 350
    holiday_uplift: float = 1.4  # on a public holiday and the days before it
    holiday_window_days: int = 2
    events: tuple[str, ...] = ("Black Friday", "Cyber Monday")  # keys of EVENTS
    event_uplift: float = 2.0
    # Promotions
    promos_per_series_year: float = 2.0
    promo_days: tuple[int, int] = (7, 14)
    promo_uplift: tuple[float, float] = (1.3, 2.5)
    promo_types: tuple[str, ...] = ("price_cut", "display", "mailer", "display_mailer")
    # Replenishment
    review_period_days: int = 7
    lead_time_days: tuple[int, int] = (1, 4)
    safety_z: float = 0.5
    forecast_error: float = 0.3  # lognormal sd of the planner's demand rate per series

    def __post_init__(self) -> None:
        sizes = (self.n_customers, self.n_stores, self.n_products, self.n_categories, self.days)
        if min(sizes) < 1:
            raise ValueError(f"sizes and days must be >= 1, got {self}")
        if self.n_products < self.n_categories:
            raise ValueError(
                f"n_products ({self.n_products}) must be >= n_categories ({self.n_categories})"
            )
        if len(self.weekday_factors) != 7 or min(self.weekday_factors) <= 0:
            raise ValueError(
                f"weekday_factors needs 7 positive values (Mon..Sun), got {self.weekday_factors}"
            )
        if len(self.channel_adoption) != len(CHANNELS):
            raise ValueError(f"channel_adoption needs one share per channel {CHANNELS}")
        unknown = set(self.events) - set(EVENTS)
        if unknown:
            raise ValueError(f"unknown events {sorted(unknown)}; known: {sorted(EVENTS)}")
        unknown = set(self.promo_types) - set(PROMO_DISCOUNTS)
        if unknown or not self.promo_types:
            raise ValueError(
                f"promo_types {list(self.promo_types)} must be a non-empty subset of "
                f"{sorted(PROMO_DISCOUNTS)}"
            )


def generate(config: SyntheticConfig = SyntheticConfig()) -> dict[str, pd.DataFrame]:
    """Return canonical tables keyed by table name."""
    rng = np.random.default_rng(config.seed)
    dates = pd.date_range(config.start, periods=config.days, freq="D")
    calendar, day_factor = _calendar(config, dates)
    products, category, popularity = _products(config, rng)
    stores, lead_time = _stores(config, rng)
    customers, home, channel_mix = _customers(config, rng)
    identities, account_of = _identities(config, channel_mix > 0, rng)
    promotions, promo_of, uplift, promo_price = _promotions(
        config, rng, dates, products["price"].to_numpy()
    )

    weekday = np.asarray(config.weekday_factors, float)
    weekday = (weekday / weekday.mean())[dates.dayofweek]
    season = _seasonality(config, rng, dates)
    # Demand multiplier of every store x product x day, apart from the weekday.
    multiplier = np.repeat(
        season[category][None] * day_factor.astype(np.float32), config.n_stores, axis=0
    )
    has_promo = promo_of >= 0
    multiplier[has_promo] *= uplift[promo_of[has_promo]]

    wants = _merge_wants(
        [
            _cycle_wants(config, rng, home, category, popularity, multiplier, dates),
            _explore_wants(config, rng, home, popularity, weekday, multiplier),
        ],
        config,
    )
    wants["store"] = home[wants["customer"]]
    demand, series, on_hand = _replenish(config, rng, wants, lead_time)
    served = _allocate(config, rng, wants, on_hand)

    list_price = products["price"].to_numpy()
    transactions = _transactions(
        config, rng, wants, served, channel_mix, dates, list_price, promo_of, promo_price
    )
    # Each channel keeps its own account: the lines carry it, not the person.
    channel_index = pd.Series(np.arange(len(CHANNELS)), index=list(CHANNELS))
    person = transactions[CUSTOMER_ID].to_numpy() - 1
    transactions[CUSTOMER_ID] = account_of[person, channel_index[transactions[CHANNEL]].to_numpy()]
    accounts = identities[CUSTOMER_ID].to_numpy()
    owner = np.nonzero(account_of)[0][np.argsort(account_of[account_of > 0])]
    customers = customers.iloc[owner].assign(**{CUSTOMER_ID: np.sort(accounts)})
    store_ids = np.repeat(series // config.n_products + 1, config.days)
    product_ids = np.repeat(series % config.n_products + FIRST_PRODUCT_ID, config.days)
    all_dates = np.tile(dates.to_numpy(), len(series))
    raw = {
        "transactions": transactions,
        "products": products,
        "stores": stores,
        "customers": customers,
        "calendar": calendar,
        "promotions": promotions,
        "inventory": pd.DataFrame(
            {
                STORE_ID: store_ids,
                PRODUCT_ID: product_ids,
                DATE: all_dates,
                "on_hand": on_hand.ravel(),
            }
        ),
        "identities": identities,
        "true_demand": pd.DataFrame(
            {
                STORE_ID: store_ids,
                PRODUCT_ID: product_ids,
                DATE: all_dates,
                "demand": demand.ravel(),
            }
        ),
    }
    tables = {name: conform(frame, name, source=NAME) for name, frame in raw.items()}
    check_references(tables)
    return tables


def _calendar(config: SyntheticConfig, dates: pd.DatetimeIndex) -> tuple[pd.DataFrame, np.ndarray]:
    years = range(dates[0].year, dates[-1].year + 1)
    try:
        public = holidays.country_holidays(config.country, years=years)
    except NotImplementedError as error:
        raise ValueError(
            f"country {config.country!r} is not known to the holidays package; use an ISO code "
            "such as 'US'"
        ) from error
    days = dates.date
    holiday_name = np.array([public.get(day, "") for day in days], dtype=object)
    event_days = {EVENTS[name](year): name for name in config.events for year in years}
    event = np.array([event_days.get(day, "") for day in days], dtype=object)

    factor = np.ones(len(dates))
    # Shoppers stock up on the days before a holiday as well as on it.
    is_holiday = holiday_name != ""
    for lag in range(config.holiday_window_days + 1):
        ahead = np.zeros_like(is_holiday)
        ahead[: len(ahead) - lag] = is_holiday[lag:]
        factor[ahead] = config.holiday_uplift
    factor[event != ""] *= config.event_uplift
    frame = pd.DataFrame(
        {DATE: dates, "is_holiday": is_holiday, "holiday_name": holiday_name, "event": event}
    )
    return frame, factor


def _products(
    config: SyntheticConfig, rng: np.random.Generator
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    n, k = config.n_products, config.n_categories
    category = rng.permutation(np.arange(n) % k)
    popularity = rng.lognormal(0.0, 1.0, n)
    category_price = rng.uniform(1.0, 12.0, k)
    # Shelf prices end in 9 (3.49, 12.99).
    price = np.round(np.round(category_price[category] * rng.lognormal(0.0, 0.3, n), 1) - 0.01, 2)
    brand = category * config.brands_per_category + rng.integers(0, config.brands_per_category, n)
    frame = pd.DataFrame(
        {
            PRODUCT_ID: np.arange(n) + FIRST_PRODUCT_ID,
            CATEGORY: [f"cat_{c:02d}" for c in category],
            "department": [f"dept_{c % config.n_departments + 1}" for c in category],
            "brand": [f"brand_{b:03d}" for b in brand],
            "price": np.maximum(price, 0.49),
            "sold_in_units": True,
        }
    )
    return frame, category, popularity / popularity.sum()


def _stores(config: SyntheticConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    lo, hi = config.lead_time_days
    lead_time = rng.integers(lo, hi + 1, config.n_stores)
    frame = pd.DataFrame(
        {
            STORE_ID: np.arange(config.n_stores) + 1,
            "region": rng.choice(REGIONS, config.n_stores),
            "lead_time_days": lead_time,
        }
    )
    return frame, lead_time


def _customers(
    config: SyntheticConfig, rng: np.random.Generator
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    n = config.n_customers
    store_share = rng.dirichlet(np.full(config.n_stores, 5.0))
    home = rng.choice(config.n_stores, n, p=store_share)
    uses = rng.random((n, len(CHANNELS))) < np.asarray(config.channel_adoption)
    uses[~uses.any(axis=1), 0] = True
    mix = rng.dirichlet(np.ones(len(CHANNELS)), n) * uses
    mix /= mix.sum(axis=1, keepdims=True)
    frame = pd.DataFrame(
        {
            CUSTOMER_ID: np.arange(n) + 1,
            "home_store_id": home + 1,
            "opt_out": rng.random(n) < config.opt_out_rate,
        }
    )
    return frame, home, mix


def _identities(
    config: SyntheticConfig, uses: np.ndarray, rng: np.random.Generator
) -> tuple[pd.DataFrame, np.ndarray]:
    """One identity (and account) per person per channel used, with the keys that may match them.

    A person's first channel keeps the person's number as its account; other channels get new
    account numbers, so only phone/email matches and declared links reunite them.

    Returns:
        The identities table and a persons x channels array of account ids (0 where unused).
    """
    person, channel = np.nonzero(uses)
    n_people = uses.shape[0]
    primary = np.r_[True, person[1:] != person[:-1]]
    account = np.where(primary, person + 1, 0)
    account[~primary] = n_people + 1 + np.arange((~primary).sum())
    account_of = np.zeros(uses.shape, dtype=np.int64)
    account_of[person, channel] = account
    # Distinct random numbers keep ids unguessable from the customer id, as in real systems.
    number = rng.choice(900_000_000, len(person), replace=False) + 100_000_000
    prefix = np.array([IDENTITY_PREFIXES[c] for c in CHANNELS], dtype=object)[channel]
    channel_ids = prefix + pd.Series(number).astype(str).to_numpy(dtype=object)
    keys = {}
    for column, share in (("phone_hash", config.has_phone), ("email_hash", config.has_email)):
        owns = (rng.random(n_people) < share)[person]
        shared = owns & (rng.random(len(person)) < config.key_shared)
        # Stand-ins for salted hashes: the generator never makes raw phones or emails.
        keys[column] = np.where(shared, [f"{column[:5]}-{p:08d}" for p in person], "")
    primary_key = pd.Series(CHANNELS, dtype=object).to_numpy()[channel] + ":" + channel_ids
    primary_of = pd.Series(primary_key[primary], index=person[primary])
    declared = ~primary & (rng.random(len(person)) < config.link_declared)
    linked_to = np.where(declared, primary_of.reindex(person).to_numpy(), "")
    frame = pd.DataFrame(
        {
            CHANNEL: np.asarray(CHANNELS, dtype=object)[channel],
            "channel_customer_id": channel_ids,
            CUSTOMER_ID: account,
            **keys,
            "linked_to": linked_to,
        }
    )
    return frame, account_of


def _promotions(
    config: SyntheticConfig,
    rng: np.random.Generator,
    dates: pd.DatetimeIndex,
    list_price: np.ndarray,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Promotion periods, and per store x product x day the promotion index (-1 for none)."""
    n_stores, n_products, n_days = config.n_stores, config.n_products, config.days
    counts = rng.poisson(config.promos_per_series_year * n_days / 365, n_stores * n_products)
    series = np.repeat(np.arange(n_stores * n_products), counts)
    start = rng.integers(0, n_days, len(series))
    end = np.minimum(
        start + rng.integers(config.promo_days[0], config.promo_days[1] + 1, len(series)) - 1,
        n_days - 1,
    )
    order = np.lexsort((start, series))
    series, start, end = series[order], start[order], end[order]
    # Drop promotions that overlap an earlier one of the same series (conservatively: any earlier).
    previous_end = pd.Series(end).groupby(series).cummax().groupby(series).shift()
    keep = ~(previous_end.to_numpy() >= start)
    series, start, end = series[keep], start[keep], end[keep]

    n = len(series)
    promo_type = np.asarray(config.promo_types, dtype=object)[
        rng.integers(0, len(config.promo_types), n)
    ]
    bounds = np.array([PROMO_DISCOUNTS[t] for t in promo_type]).reshape(n, 2)
    discount = bounds[:, 0] + (bounds[:, 1] - bounds[:, 0]) * rng.random(n)
    product = series % n_products
    price = np.round(list_price[product] * (1 - discount), 2)
    # Deeper discounts lift demand more, with noise, within the configured range.
    depth = np.clip(0.6 * discount / 0.35 + 0.4 * rng.random(n), 0, 1)
    lo, hi = config.promo_uplift
    uplift = (lo + (hi - lo) * depth).astype(np.float32)

    promo_of = np.full((n_stores, n_products, n_days), -1, dtype=np.int32)
    length = end - start + 1
    which = np.repeat(np.arange(n), length)
    day = start[which] + np.arange(len(which)) - np.repeat(np.cumsum(length) - length, length)
    promo_of[series[which] // n_products, product[which], day] = which
    frame = pd.DataFrame(
        {
            STORE_ID: series // n_products + 1,
            PRODUCT_ID: product + FIRST_PRODUCT_ID,
            "start_date": dates[start],
            "end_date": dates[end],
            "promo_type": promo_type,
            "price": price,
        }
    )
    if frame.empty:  # the contract refuses empty tables; keep a one-day promotion
        frame = pd.DataFrame(
            {
                STORE_ID: [1],
                PRODUCT_ID: [FIRST_PRODUCT_ID],
                "start_date": [dates[0]],
                "end_date": [dates[0]],
                "promo_type": ["display"],
                "price": [list_price[0]],
            }
        )
        promo_of[0, 0, 0] = 0
        uplift, price = np.ones(1, np.float32), list_price[:1]
    return frame, promo_of, uplift, price


def _seasonality(
    config: SyntheticConfig, rng: np.random.Generator, dates: pd.DatetimeIndex
) -> np.ndarray:
    """Yearly wave per category x day; categories peak around the configured day of year."""
    k = config.n_categories
    amplitude = config.yearly_amplitude * rng.uniform(0.5, 1.5, k)
    peak = config.yearly_peak_doy + rng.normal(0.0, 45.0, k)
    angle = 2 * np.pi * (dates.dayofyear.to_numpy()[None] - peak[:, None]) / 365.25
    return (1 + amplitude[:, None] * np.cos(angle)).astype(np.float32)


def _draw(cum_weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row, drawn in proportion to the row's weights (given as cumulative sums)."""
    u = rng.random(len(cum_weights))[:, None] * cum_weights[:, -1:]
    return (u > cum_weights).sum(axis=1)


def _stochastic_round(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    low = np.floor(x)
    return low + (rng.random(len(x)) < x - low)


def _cycle_wants(
    config: SyntheticConfig,
    rng: np.random.Generator,
    home: np.ndarray,
    category: np.ndarray,
    popularity: np.ndarray,
    multiplier: np.ndarray,
    dates: pd.DatetimeIndex,
) -> dict[str, np.ndarray]:
    """Repurchases of each customer's favourite products on their own cycles."""
    n_cust, n_days = config.n_customers, config.days
    # Favourites: a category from the customer's tastes, then a product by popularity in it.
    n_fav = 1 + rng.poisson(max(config.favourites_mean - 1, 0), n_cust)
    customer = np.repeat(np.arange(n_cust), n_fav)
    tastes = rng.dirichlet(np.full(config.n_categories, config.category_focus), n_cust)
    cat = _draw(np.cumsum(tastes, axis=1)[customer], rng)
    by_cat = np.argsort(category, kind="stable")
    cum_pop = np.cumsum(popularity[by_cat])
    first = np.searchsorted(category[by_cat], np.arange(config.n_categories))
    last = np.append(first[1:], len(by_cat)) - 1
    low = np.where(first > 0, cum_pop[first - 1], 0.0)
    target = low[cat] + rng.random(len(cat)) * (cum_pop[last] - low)[cat]
    pick = np.clip(np.searchsorted(cum_pop, target, side="right"), first[cat], last[cat])
    product = by_cat[pick]
    pair = np.unique(customer * config.n_products + product)
    customer, product = pair // config.n_products, pair % config.n_products

    # Products have a natural cycle (milk weekly, detergent monthly); customers vary around it.
    product_cycle = rng.gamma(
        config.cycle_shape, config.cycle_mean_days / config.cycle_shape, config.n_products
    )
    cycle = np.clip(product_cycle[product] * rng.lognormal(0.0, 0.2, len(pair)), 4.0, 60.0)
    base_quantity = 1 + rng.poisson(0.3, len(pair))
    offset = rng.random(len(pair)) * cycle
    repeats = np.ceil((n_days - offset) / cycle).astype(int) + 1
    which = np.repeat(np.arange(len(pair)), repeats)
    k = np.arange(len(which)) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    jitter = rng.normal(0.0, config.cycle_jitter, len(which))
    day = np.rint(offset[which] + (k + jitter) * cycle[which]).astype(np.int64)

    weekday = np.asarray(config.weekday_factors, float)
    first_weekday = dates[0].dayofweek
    window = np.arange(-SLIP_DAYS, SLIP_DAYS + 1)
    day = (
        day
        - SLIP_DAYS
        + _draw(np.cumsum(weekday[(first_weekday + day[:, None] + window) % 7], axis=1), rng)
    )
    inside = (day >= 0) & (day < n_days)
    which, day = which[inside], day[inside]

    store = home[customer[which]]
    # A habit purchase is never skipped (that would break the cycle); factors scale its size.
    quantity = np.maximum(
        _stochastic_round(base_quantity[which] * multiplier[store, product[which], day], rng), 1
    )
    return {
        "customer": customer[which],
        "product": product[which],
        "day": day,
        "quantity": quantity,
    }


def _explore_wants(
    config: SyntheticConfig,
    rng: np.random.Generator,
    home: np.ndarray,
    popularity: np.ndarray,
    weekday: np.ndarray,
    multiplier: np.ndarray,
) -> dict[str, np.ndarray]:
    """Occasional purchases of popular products by random customers of the store."""
    per_store = np.bincount(home, minlength=config.n_stores)
    rate = (
        config.explore_rate
        * per_store[:, None, None]
        * popularity[None, :, None]
        * weekday[None, None]
    ) * multiplier
    counts = rng.poisson(rate).ravel()
    cells = np.repeat(np.flatnonzero(counts), counts[counts > 0])
    store, product, day = np.unravel_index(cells, rate.shape)
    by_store = np.argsort(home, kind="stable")
    first = np.cumsum(per_store) - per_store
    customer = by_store[first[store] + (rng.random(len(cells)) * per_store[store]).astype(int)]
    quantity = 1 + rng.poisson(0.2, len(cells))
    return {"customer": customer, "product": product, "day": day, "quantity": quantity}


def _merge_wants(
    parts: list[dict[str, np.ndarray]], config: SyntheticConfig
) -> dict[str, np.ndarray]:
    """One want per customer x product x day (a basket holds a product once)."""
    columns = ("customer", "product", "day", "quantity")
    customer, product, day, quantity = (np.concatenate([p[c] for p in parts]) for c in columns)
    keep = quantity > 0
    series = customer[keep].astype(np.int64) * config.n_products + product[keep]
    key = series * config.days + day[keep]
    unique, inverse = np.unique(key, return_inverse=True)
    total = np.bincount(inverse, weights=quantity[keep])
    return {
        "customer": unique // config.days // config.n_products,
        "product": unique // config.days % config.n_products,
        "day": unique % config.days,
        "quantity": total,
    }


def _replenish(
    config: SyntheticConfig,
    rng: np.random.Generator,
    wants: dict[str, np.ndarray],
    lead_time: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Daily demand and on-hand at the start of each day for every series with demand.

    Periodic review: every `review_period_days` a store orders up to a level planned from a noisy
    average rate that ignores promotions and seasons, so some series run out before delivery.
    """
    n_days = config.days
    store = wants["store"]
    series_key = store * config.n_products + wants["product"]
    series, position = np.unique(series_key, return_inverse=True)
    demand = np.bincount(
        position * n_days + wants["day"], wants["quantity"], minlength=len(series) * n_days
    ).reshape(len(series), n_days)
    wants["series_pos"] = position

    series_store = series // config.n_products
    lead = lead_time[series_store]
    cover = config.review_period_days + lead
    rate = demand.mean(axis=1) * rng.lognormal(
        -(config.forecast_error**2) / 2, config.forecast_error, len(series)
    )
    level = np.maximum(np.ceil(rate * cover + config.safety_z * np.sqrt(rate * cover)), 1.0)
    review_offset = rng.integers(0, config.review_period_days, config.n_stores)[series_store]

    on_hand = np.zeros((len(series), n_days))
    stock = level.copy()
    on_order = np.zeros(len(series))
    arrivals = np.zeros((len(series), n_days + int(lead.max()) + 1))
    rows = np.arange(len(series))
    for day in range(n_days):
        stock += arrivals[:, day]
        on_order -= arrivals[:, day]
        on_hand[:, day] = stock
        stock -= np.minimum(demand[:, day], stock)
        review = (day + review_offset) % config.review_period_days == 0
        order = np.where(review, np.maximum(level - stock - on_order, 0.0), 0.0)
        arrivals[rows, day + lead] += order
        on_order += order
    return demand, series, on_hand


def _allocate(
    config: SyntheticConfig,
    rng: np.random.Generator,
    wants: dict[str, np.ndarray],
    on_hand: np.ndarray,
) -> np.ndarray:
    """Units served per want: the day's stock goes to that day's wants in a random order."""
    cell = wants["series_pos"].astype(np.int64) * config.days + wants["day"]
    order = np.lexsort((rng.random(len(cell)), cell))
    quantity = wants["quantity"][order]
    cumulative = np.cumsum(quantity)
    starts = np.r_[True, cell[order][1:] != cell[order][:-1]]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(cell)), 0))
    before = cumulative - quantity - (cumulative - quantity)[group_start]
    available = on_hand.ravel()[cell[order]]
    served = np.empty(len(cell))
    served[order] = np.clip(available - before, 0.0, quantity)
    return served


def _transactions(
    config: SyntheticConfig,
    rng: np.random.Generator,
    wants: dict[str, np.ndarray],
    served: np.ndarray,
    channel_mix: np.ndarray,
    dates: pd.DatetimeIndex,
    list_price: np.ndarray,
    promo_of: np.ndarray,
    promo_price: np.ndarray,
) -> pd.DataFrame:
    """Served wants as order lines; a customer's lines of one day form one order in one channel."""
    # Channel and time are drawn per trip (customer x day) so a basket stays together.
    trip_key = wants["customer"].astype(np.int64) * config.days + wants["day"]
    trips, trip = np.unique(trip_key, return_inverse=True)
    trip_customer, trip_day = trips // config.days, trips % config.days
    trip_channel = _draw(np.cumsum(channel_mix[trip_customer], axis=1), rng)
    hours = np.cumsum(np.stack([STORE_HOURS, ONLINE_HOURS]), axis=1)
    hour = _draw(hours[np.minimum(trip_channel, 1)], rng)
    seconds = hour * 3600 + rng.integers(0, 3600, len(trips))
    trip_ts = dates.to_numpy()[trip_day] + seconds.astype("timedelta64[s]")

    sold = served > 0
    trip, quantity = trip[sold], served[sold]
    product, day = wants["product"][sold], wants["day"][sold]
    store = wants["store"][sold]
    # Order ids follow time; only trips that sold something get one.
    used = np.flatnonzero(np.bincount(trip, minlength=len(trips)))
    rank = np.empty(len(trips), dtype=np.int64)
    rank[used] = np.argsort(np.argsort(trip_ts[used], kind="stable"), kind="stable") + 1
    promo = promo_of[store, product, day]
    paid = np.where(promo >= 0, promo_price[np.maximum(promo, 0)], list_price[product])
    frame = pd.DataFrame(
        {
            CUSTOMER_ID: trip_customer[trip] + 1,
            ORDER_ID: rank[trip],
            PRODUCT_ID: product + FIRST_PRODUCT_ID,
            STORE_ID: store + 1,
            CHANNEL: np.asarray(CHANNELS, dtype=object)[trip_channel[trip]],
            TS: trip_ts[trip],
            QUANTITY: quantity,
            NET_SALES: np.round(quantity * paid, 2),
            DISCOUNT: np.round(quantity * (list_price[product] - paid), 2),
        }
    )
    return frame.sort_values([ORDER_ID, PRODUCT_ID], kind="stable").reset_index(drop=True)
