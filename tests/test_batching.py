"""The executor's batching policy (pure): claim fast tasks in batches, give back behind slow
ones, share round trips between outcomes."""

from __future__ import annotations

from flowkit.workers.batching import BatchPolicy


def test_it_starts_one_at_a_time_and_batches_fast_tasks() -> None:
    policy = BatchPolicy()
    assert policy.batch_size == 1
    for _ in range(100):
        policy.observe(0.0001)  # 0.1 ms tasks: the whole ones in 5 ms, plus one held in hand
    assert policy.batch_size == int(0.005 / policy.mean_seconds) + 1 == 50
    for _ in range(40):
        policy.observe(0.000001)
    assert policy.batch_size == policy.max_batch


def test_slow_tasks_are_claimed_one_by_one_without_prefetch() -> None:
    policy = BatchPolicy()
    for _ in range(40):
        policy.observe(0.2)
    assert policy.batch_size == 1
    policy = BatchPolicy()
    for _ in range(40):
        policy.observe(0.01)  # up to 50 ms: one ahead of the one running
    assert policy.batch_size == 2


def test_a_task_slower_than_the_batch_promised_gives_the_rest_back() -> None:
    policy = BatchPolicy()
    for _ in range(100):
        policy.observe(0.0001)
    assert not policy.is_slow(0.004)  # under release_after_seconds
    assert policy.is_slow(0.006)
    for _ in range(40):
        policy.observe(0.01)
    assert not policy.is_slow(0.02) and policy.is_slow(0.04)  # 3x the average


def test_outcomes_wait_briefly_to_share_a_round_trip() -> None:
    policy = BatchPolicy()
    for _ in range(40):
        policy.observe(0.0001)
    assert not policy.flush_now(0.001)
    assert policy.flush_now(0.003)
    slow = BatchPolicy(mean_seconds=0.01)
    assert slow.flush_now(0.0)  # tasks longer than the wait: never hold an outcome back
    assert policy.next_claim(in_hand=5) == policy.batch_size - 5
    assert policy.next_claim(in_hand=100) == 1
