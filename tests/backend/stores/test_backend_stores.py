"""One way to reach a store: ``Backend`` builds each store once, as an attribute, and the
dependency aliases of ``deps.py`` hand out those same objects."""

from __future__ import annotations

from pathlib import Path

from videodetector.backend import deps
from videodetector.backend.service import Backend
from videodetector.backend.settings import Settings
from videodetector.backend.stores.cameras import SqlCameraStore
from videodetector.backend.stores.history import SqlHistoryStore
from videodetector.backend.stores.report import SqlReportStore
from videodetector.backend.stores.stats import SqlStatsStore
from videodetector.backend.stores.sync import SqlSyncStore
from videodetector.backend.stores.watchlists import SqlWatchListStore
from videodetector.backend.stores.webhooks import SqlWebhookStore
from videodetector.backend.webhook_delivery import Deliverer
from videodetector.backend.websession import SessionStore

STORES = {"cameras_store": SqlCameraStore, "history_store": SqlHistoryStore,
          "watchlists_store": SqlWatchListStore, "webhooks_store": SqlWebhookStore,
          "stats_store": SqlStatsStore, "sync_store": SqlSyncStore,
          "report_store": SqlReportStore, "sessions_store": SessionStore}


def test_the_backend_holds_one_of_each_store(tmp_path: Path) -> None:
    backend = Backend(Settings(data_dir=tmp_path, preload_models=False))
    try:
        for name, kind in STORES.items():
            store = getattr(backend, name)
            assert isinstance(store, kind), name
            assert store.db is backend.db, name
        assert deps.cameras_of(backend) is backend.cameras_store
        assert deps.webhooks_of(backend) is backend.webhooks_store
        assert deps.stats_of(backend) is backend.stats_store
        assert Deliverer(backend).store is backend.webhooks_store
    finally:
        backend.close()
