"""engine.services.serving.decoder_wake: a decode request wakes the decoder thread (and its
OpenMP team) before its prompt is parsed; never while a decode is queued or running, never on
another thread, and never changing an answer."""

import threading

import pytest

from engine.services import serving
from tests.engine.decode.test_decode_api import post_decode
from tests.factories import client_for


@pytest.fixture
def wakes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The threads `_wake_team` ran on, in order (the real fill still runs)."""
    seen: list[int] = []
    real = serving._wake_team

    def recording() -> None:
        seen.append(threading.get_ident())
        real()

    monkeypatch.setattr(serving, "_wake_team", recording)
    return seen


def test_a_wake_runs_its_fill_on_the_decoder_thread(wakes: list[int]) -> None:
    serving.decoder_wake()
    decoder = serving.on_decoder_thread(threading.get_ident)  # queued behind the wake
    assert wakes == [decoder]
    assert decoder != threading.get_ident()
    assert float(serving._wake_buffer[0].abs().sum()) == 0.0


def test_no_wake_while_a_decode_is_queued_or_running(wakes: list[int]) -> None:
    # From inside a decoder-thread call (one in flight), and with another call waiting.
    serving.on_decoder_thread(serving.decoder_wake)
    release = threading.Event()
    started = threading.Event()

    def slow() -> None:
        started.set()
        release.wait(10)

    waiting = threading.Thread(target=serving.on_decoder_thread, args=(slow,))
    waiting.start()
    assert started.wait(10)
    serving.decoder_wake()
    release.set()
    waiting.join(10)
    serving.on_decoder_thread(lambda: None)
    assert wakes == []
    assert serving._in_flight == 0


def test_a_decode_request_wakes_the_decoder_once_and_answers_the_same(
    image, version, annotator_user, wakes: list[int]
) -> None:
    client = client_for(annotator_user)
    body = {"points": [[120, 45]], "labels": [1]}
    first = post_decode(client, image.pk, body)
    assert first.status_code == 200
    assert len(wakes) == 1
    again = post_decode(client, image.pk, body)
    assert [m["rle"] for m in again.json()["masks"]] == [m["rle"] for m in first.json()["masks"]]
    assert len(wakes) == 2
    # Other methods of the endpoint (an unauthenticated GET: 405 / 401) wake nothing.
    client.get(f"/api/images/{image.pk}/decode/")
    assert len(wakes) == 2
