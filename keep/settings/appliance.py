"""The data plane's view: what `keep serve` reads. The appliance passes inference and rag their
own small configs built from it; neither of them reads settings."""

from __future__ import annotations

from pydantic import model_validator

from keep.settings.api import ApiSettings
from keep.settings.engine import EngineSettings
from keep.settings.rag import RagSettings
from keep.settings.receipts import ReceiptSettings
from keep.settings.shared import LogLevel


class ApplianceSettings(ApiSettings, EngineSettings, RagSettings, ReceiptSettings):
    log_level: LogLevel

    @model_validator(mode="after")
    def _batch_holds_every_session(self) -> ApplianceSettings:
        # Each step carries one decode token per generating turn, so a batch must fit all.
        if self.n_batch < self.slots:
            raise ValueError("KEEP_N_BATCH must be at least KEEP_SLOTS")
        return self
