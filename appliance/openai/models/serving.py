"""The models this appliance serves: the one pinned model, loaded at start-up."""

from __future__ import annotations

from appliance.errors import ModelNotFound
from appliance.openai.models.protocol import ModelList, ModelOut
from inference.registry import PinnedModel


class ModelServing:
    def __init__(self, pinned: PinnedModel, *, loaded_at: int) -> None:
        self._served = ModelOut(id=pinned.name, created=loaded_at)

    def list(self) -> ModelList:
        return ModelList(data=[self._served])

    def get(self, model_id: str) -> ModelOut:
        if model_id != self._served.id:
            raise ModelNotFound("the requested model does not exist", param="model")
        return self._served
