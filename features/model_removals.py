"""The forget queue: customers erased from the data whose history still sits inside registered
models. `omnishelf train recommender` leaves them out and, once the new champion is registered,
takes them off the queue; a training run that fails leaves the queue as it was."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.contract import CUSTOMER_ID
from features.dataset import write_atomically

QUEUE_FILE = "model_removals.parquet"
QUEUED_AT = "queued_at"
WHEN = "at the next `omnishelf train recommender` run"


def queue_path(identity_dir: Path) -> Path:
    return identity_dir / QUEUE_FILE


def pending_removals(identity_dir: Path) -> pd.DataFrame:
    """The queue: customer_id, queued_at (UTC), oldest first; empty when there is none."""
    path = queue_path(identity_dir)
    if not path.exists():
        return pd.DataFrame(
            {
                CUSTOMER_ID: pd.Series(dtype="int64"),
                QUEUED_AT: pd.Series(dtype="datetime64[us, UTC]"),
            }
        )
    return pd.read_parquet(path)


def queue_removal(identity_dir: Path, customer_id: int) -> None:
    """Add the customer to the queue (once: a repeated forget keeps the first date)."""
    queue = pending_removals(identity_dir)
    if (queue[CUSTOMER_ID] == customer_id).any():
        return
    row = pd.DataFrame({CUSTOMER_ID: [customer_id], QUEUED_AT: [pd.Timestamp.now(tz="UTC")]})
    _write(identity_dir, pd.concat([queue, row.astype(queue.dtypes)], ignore_index=True))


def clear_removals(identity_dir: Path, customer_ids) -> None:
    """Take `customer_ids` (those a training run left out) off the queue; customers queued while
    it ran stay for the next one."""
    queue = pending_removals(identity_dir)
    kept = queue[~queue[CUSTOMER_ID].isin(list(customer_ids))]
    if len(kept) < len(queue):
        _write(identity_dir, kept)


def _write(identity_dir: Path, queue: pd.DataFrame) -> None:
    write_atomically(
        queue_path(identity_dir), lambda partial: queue.to_parquet(partial, index=False)
    )
