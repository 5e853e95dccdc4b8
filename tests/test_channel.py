"""hbwrap.channel: the keeper's pipe to its supervisor (handshake line, then frames), over real pipes."""
import errno
import os

from hbwrap.channel import SPILL_MAX, SPILL_STALL_S
from hbwrap.channelreader import ChannelReader
from hbwrap.channelwriter import ChannelWriter


def pair(clock=None):
    r, w = os.pipe()
    writer = ChannelWriter(w, **({"clock": clock} if clock else {}))
    return writer, ChannelReader(r)


def test_the_handshake_line_then_frames_in_order():
    writer, reader = pair()
    writer.line("ok 123 456\n", keep_open=True)
    writer.warning("/s/job/output.log", errno.ENOSPC)
    writer.data((0, 100), "O", b"first")
    writer.record({"keeper_pid": 7, "ended_at": None})
    writer.data((0, 100), "E", b"second")
    assert reader.peek() is None  # nothing is a frame before the handshake line is read
    assert reader.read_line() == b"ok 123 456"
    frame = reader.peek()
    assert frame.position == (0, 100) and frame.stream == "O" and frame.data == b"first"
    assert reader.warnings == [("/s/job/output.log", errno.ENOSPC)] and reader.record is None
    assert reader.pop() == frame
    second = reader.pop()
    assert (second.stream, second.data) == ("E", b"second")
    assert reader.record == {"keeper_pid": 7, "ended_at": None} and reader.records == 1
    assert reader.pop() is None and not reader.closed
    writer.close()
    assert reader.peek() is None and reader.closed  # EOF closes the reader's end


def test_an_exec_handshake_closes_the_pipe():
    writer, reader = pair()
    writer.line("exec 127 No such file or directory\n", keep_open=False)
    assert reader.read_line() == b"exec 127 No such file or directory"
    assert reader.peek() is None and reader.closed


def test_big_frames_cross_the_pipe_in_pieces():
    writer, reader = pair()
    writer.line("ok 1 2\n", keep_open=True)
    assert reader.read_line() == b"ok 1 2"
    blob = os.urandom(3 * 1024 * 1024)
    got = b""
    for i in range(0, len(blob), 1 << 20):
        assert writer.data((2, i), "O", blob[i:i + (1 << 20)]) == 0
        while writer.pending or reader.peek() is not None:
            frame = reader.pop()
            if frame is not None:
                assert frame.position == (2, len(got))
                got += frame.data
            writer.flush()
    assert got == blob


def test_a_supervisor_that_is_gone_gets_nothing_and_the_output_counts_as_dropped():
    writer, reader = pair()
    writer.line("ok 1 2\n", keep_open=True)
    reader.close()
    writer.data((0, 0), "O", b"x" * 10)  # EPIPE: the writer notices at once
    assert writer.dead and not writer.pending
    assert writer.data((0, 0), "O", b"y" * 5) == 5
    assert writer.dropped == 15


def test_a_full_queue_holds_the_command_back_but_not_for_a_supervisor_that_takes_nothing():
    now = [100.0]
    writer, reader = pair(clock=lambda: now[0])
    writer.line("ok 1 2\n", keep_open=True)
    chunk = b"z" * (1 << 20)
    sent = 0
    while not writer.holding_back(now[0]):
        assert writer.data((0, 0), "O", chunk) == 0
        sent += 1
    assert writer.queued >= SPILL_MAX - len(chunk) and writer.release_at() == writer.moved_at + SPILL_STALL_S
    assert writer.data((0, 0), "O", b"late") == 4  # beyond the bound: dropped, never blocking
    now[0] += SPILL_STALL_S
    assert not writer.holding_back(now[0])  # the supervisor took nothing for that long: stop waiting for it
    assert reader.read_line() == b"ok 1 2"
    taken = 0
    while reader.peek() is not None or writer.pending:
        frame = reader.pop()
        taken += len(frame.data) if frame else 0
        writer.flush()
    assert taken == sent * len(chunk) and writer.queued == 0


def test_drops_are_counted_for_the_supervisor_in_one_frame_per_place():
    now = [0.0]
    writer, reader = pair(clock=lambda: now[0])
    writer.line("ok 1 2\n", keep_open=True)
    chunk = b"q" * (1 << 20)
    while writer.data((0, 7), "O", chunk) == 0:
        pass
    now[0] += SPILL_STALL_S
    for _ in range(3):
        assert writer.data((0, 7), "E", b"x" * 100) == 100
    assert writer.data((0, 9), "O", b"y" * 10) == 10
    assert reader.read_line() == b"ok 1 2"
    while reader.peek() is not None or writer.pending:
        reader.pop()
        writer.flush()
    assert reader.drops == [((0, 7), len(chunk) + 300), ((0, 9), 10)]
