"""kova.controllers.access: a SecurityGroup's deletion held while Instances name it, woken when they change."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from kova.api.errors import Refusal
from kova.controllers import access


class Rt:
    """What the handler touches besides the held group's status (`_hold`, recorded instead)."""

    def __init__(self) -> None:
        self.deleted: list[tuple[str, str, str | None]] = []
        self.kube = self.writes = self

    async def delete(self, res: Any, name: str, namespace: str | None) -> None:
        self.deleted.append((res.plural, name, namespace))

    def forget(self, res: Any, namespace: str, name: str) -> None:
        pass


def holding(monkeypatch: pytest.MonkeyPatch) -> asyncio.Queue[str]:
    """What the held group says, message by message."""
    said: asyncio.Queue[str] = asyncio.Queue()

    async def hold(rt: Any, namespace: str, name: str, refusal: Refusal) -> None:
        said.put_nowait(refusal.message)
    monkeypatch.setattr(access, "_hold", hold)
    return said


def test_an_unused_group_goes_at_once_with_its_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    async def run() -> None:
        said, rt = holding(monkeypatch), Rt()
        await access.delete_security_group(rt, access.GroupDeletions(users=lambda ns, g: []),  # type: ignore[arg-type]
                                           "team-a", "web")
        assert said.empty() and rt.deleted == [("networkpolicies", "kova-sg-web", "team-a")]
    asyncio.run(run())


def test_a_used_group_is_held_until_its_last_server_stops_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    async def run() -> None:
        said, rt = holding(monkeypatch), Rt()
        users = {"team-a": ["a", "b"]}
        deletions = access.GroupDeletions(users=lambda ns, g: users[ns])
        held = asyncio.create_task(access.delete_security_group(rt, deletions, "team-a",  # type: ignore[arg-type]
                                                                "web"))
        assert (await asyncio.wait_for(said.get(), 5)).startswith("Security Group web in use by server(s) a, b")
        users["team-a"] = ["a"]
        deletions.instance_changed("team-b")  # another namespace's Instances do not wake it
        deletions.instance_changed("team-a")
        assert (await asyncio.wait_for(said.get(), 5)).startswith("Security Group web in use by server(s) a:")
        assert not held.done() and rt.deleted == []  # its policy keeps protecting a
        users["team-a"] = []
        deletions.instance_changed("team-a")
        await asyncio.wait_for(held, 5)
        assert rt.deleted == [("networkpolicies", "kova-sg-web", "team-a")] and deletions.woken == {}
    asyncio.run(run())


def test_a_long_hold_is_handed_back_to_kopf_to_call_again(monkeypatch: pytest.MonkeyPatch) -> None:
    holding(monkeypatch)
    monkeypatch.setattr(access, "HOLD_SECONDS", 0.05)
    deletions = access.GroupDeletions(users=lambda ns, g: ["a"])
    with pytest.raises(kopf.TemporaryError, match="in use by server"):
        asyncio.run(access.delete_security_group(Rt(), deletions, "team-a", "web"))  # type: ignore[arg-type]
    assert deletions.woken == {}
