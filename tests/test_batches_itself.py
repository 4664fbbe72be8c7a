"""An endpoint that batches itself (continuous batching) gets a batch's worth of places."""

from __future__ import annotations

import asyncio

import pytest

from impasto import endpoint, inspect_model
from impasto.config import PackageConfig
from impasto.errors import Overloaded
from impasto.runner import Runner


class Model:
    """Each call waits at a gate; counts how many are inside at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.peak = 0
        self.gate: asyncio.Event | None = None

    @endpoint(batches_itself=True)
    async def step(self, x: int) -> int:
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        assert self.gate is not None
        await self.gate.wait()
        self.inside -= 1
        return x

    def plain(self, x: int) -> int:
        return x


def test_one_slot_lets_max_batch_size_calls_in_and_admission_counts_them():
    spec = inspect_model(Model)
    assert spec.endpoints["step"].batches_itself
    config = PackageConfig.model_validate(
        {"batching": {"max_batch_size": 3}, "runtime": {"max_queue": 1}}
    )
    runner = Runner(spec, Model, config)

    async def scenario() -> tuple[list[int], int]:
        assert await runner.load()
        model = runner.model
        model.gate = asyncio.Event()
        calls = [asyncio.create_task(runner.predict({"x": i}, "step")) for i in range(4)]

        async def settled() -> None:
            while model.inside < 3 or runner.stats()["waiting"] < 1:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(settled(), 30)
        assert (model.inside, runner.stats()["waiting"]) == (3, 1)  # 1 slot x 3, 1 waits
        with pytest.raises(Overloaded):  # 3 running + max_queue 1: the fifth is refused
            runner.admit(spec.endpoints["step"])
        model.gate.set()
        try:
            return list(await asyncio.gather(*calls)), model.peak
        finally:
            await runner.aclose()

    assert asyncio.run(scenario()) == ([0, 1, 2, 3], 3)
