"""CopyStream without a database: full reads, clean end, failures never EOF."""

import pytest

from pipeline.sources.postgres.copy_stream import CopyFailed, CopyStream


def _producer(chunks: list[bytes], error: Exception | None = None):
    def copy(writer):
        for chunk in chunks:
            writer.write(chunk)
        if error is not None:
            raise error

    return copy


def test_read_fills_the_request_across_chunks():
    # pyarrow parses each read as one block: a short read would shrink batches.
    data = [bytes([i]) * 100_000 for i in range(10)]
    stream = CopyStream(_producer(data), chunk_bytes=100_000)
    first = stream.read(350_000)
    assert first == b"".join(data)[:350_000]
    rest = stream.read(10_000_000)
    assert first + rest == b"".join(data)
    assert stream.read(1) == b""
    stream.join()


def test_a_failed_copy_raises_instead_of_ending():
    stream = CopyStream(_producer([b"a,1\n"] * 10, RuntimeError("connection lost")))
    with pytest.raises(CopyFailed, match="connection lost"):
        stream.read(-1)
    assert isinstance(stream.error, RuntimeError)
    stream.join()


def test_an_empty_copy_is_at_end():
    stream = CopyStream(_producer([]))
    assert stream.at_end()
    assert stream.read(100) == b""
    stream.join()


def test_a_read_waiting_on_a_closed_stream_fails_instead_of_hanging():
    import threading

    release = threading.Event()

    def slow_copy(writer):
        writer.write(b"x" * 10)
        release.wait(5)  # the COPY stalls; the consumer gives up and closes

    stream = CopyStream(slow_copy, chunk_bytes=1)
    assert stream.read(10) == b"x" * 10
    outcome = []

    def reader():  # pyarrow reads ahead on its own thread like this
        try:
            stream.read(10)
        except CopyFailed as err:
            outcome.append(err)

    thread = threading.Thread(target=reader)
    thread.start()
    stream.close()
    thread.join(timeout=5)
    assert not thread.is_alive() and outcome
    release.set()
    stream.join(timeout=5)
