"""A refused artifact is tried again: after a doubling backoff, on a new release, on a new
director version, on a refresh command; an install that commits forgets the refusal."""

from __future__ import annotations

from edgefleet.agent.refusals import RETRY_MAX_S, RETRY_MIN_S, RefusalBook

SHA = "a" * 64


def test_backoff_doubles_and_is_capped() -> None:
    now = [1000.0]
    book = RefusalBook(clock=lambda: now[0])
    waits = []
    for _ in range(12):
        r = book.refuse(SHA, release=3, reason="bad hash")
        waits.append(r.retry_at - now[0])
    assert waits[:3] == [RETRY_MIN_S, 2 * RETRY_MIN_S, 4 * RETRY_MIN_S]
    assert max(waits) == RETRY_MAX_S
    assert not book.may_try(SHA, 3)
    now[0] += RETRY_MAX_S
    assert book.may_try(SHA, 3)


def test_a_new_release_or_director_version_is_tried_at_once() -> None:
    book = RefusalBook(clock=lambda: 0.0)
    book.announced(7)
    book.refuse(SHA, release=3, reason="signature")
    assert not book.may_try(SHA, 3)
    assert book.may_try(SHA, 4)  # re-signed under a new release
    book.announced(7)  # the same director version again: nothing new
    assert not book.may_try(SHA, 3)
    book.announced(8)
    assert book.may_try(SHA, 3)
    book.refuse(SHA, release=4, reason="signature")
    assert book.get(SHA) is not None and book.get(SHA).attempts == 1  # type: ignore[union-attr]


def test_the_book_is_bounded_and_forgets() -> None:
    book = RefusalBook(clock=lambda: 0.0)
    for i in range(100):
        book.refuse(f"{i:064x}", release=1, reason="x")
    assert len(book) == 32
    book.forget(f"{99:064x}")
    assert f"{99:064x}" not in book
