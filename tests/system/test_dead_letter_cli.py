"""`sasfleet dead list|retry|purge` against real dead letters."""

from __future__ import annotations


async def test_dead_letters_are_listed_with_reasons_retried_and_purged(
    services, raw, sasfleet_cli, names, client, eventually
):
    await raw.publish(b"not json at all", message_id="garbage-1")
    await raw.publish(b'{"task": "no such name!"}', message_id="garbage-2")

    async def listed() -> list[dict[str, str]] | None:
        result = await sasfleet_cli("dead", "list", "--json")
        assert result.returncode == 0, result.stderr
        found = result.json()
        return found if len(found) == 2 else None

    letters = {d["id"]: d for d in await eventually(listed, timeout=20, what="two dead letters")}
    assert set(letters) == {"garbage-1", "garbage-2"}
    assert letters["garbage-1"]["queue"] == names.submit
    assert "invalid submission" in letters["garbage-1"]["reason"]
    assert letters["garbage-1"]["by"].startswith("scheduler-")
    assert letters["garbage-1"]["body"] == "not json at all"

    # Listing leaves them where they are.
    again = await sasfleet_cli("dead", "list", "--json")
    assert {d["id"] for d in again.json()} == {"garbage-1", "garbage-2"}

    # A retry re-publishes to the queue it came from; the scheduler rejects it again.
    retried = await sasfleet_cli("dead", "retry", "garbage-1")
    assert retried.returncode == 0, retried.stderr
    assert f"re-published garbage-1 to {names.submit}" in retried.stdout
    missing = await sasfleet_cli("dead", "retry", "no-such-id")
    assert missing.returncode == 1
    assert "not found: no-such-id" in missing.stderr
    await eventually(listed, timeout=20, what="garbage-1 dead again")

    purged = await sasfleet_cli("dead", "purge", "--yes")
    assert purged.returncode == 0
    assert "purged 2 dead letters" in purged.stdout
    empty = await sasfleet_cli("dead", "list", "--json")
    assert empty.json() == []
    # The fleet kept working throughout.
    job_id = await client.submit("echo", {"ok": 1})
    assert (await client.wait(job_id, timeout=20)).status == "succeeded"
    assert all(p.alive() for p in services.all())
