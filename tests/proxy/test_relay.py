"""The console side of the relay, against a local TCP server."""

import asyncio

from console.proxy.relay import MIN_READ_SIZE, READ_SIZE, ConsoleLink


async def test_reads_are_bounded_and_the_buffer_follows_the_traffic():
    sent = bytes(range(256)) * 4096  # 1 MiB, a screen update's worth

    async def console(reader, writer):
        writer.write(sent)
        await writer.drain()
        await reader.read(1)  # the client's go-ahead for a small trailing message
        writer.write(b"tick")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(console, "127.0.0.1", 0)
    link = await ConsoleLink.open("127.0.0.1", server.sockets[0].getsockname()[1])
    received = b""
    while len(received) < len(sent):
        chunk = await link.read()
        assert 0 < len(chunk) <= READ_SIZE
        received += chunk
    assert received == sent
    assert len(link._buffer) == READ_SIZE  # grew while the console kept it full
    link.write(b"g")
    assert await link.read() == b"tick"
    assert len(link._buffer) == MIN_READ_SIZE  # and shrank once it went quiet
    assert await link.read() == b""  # closed by the console
    assert (link.bytes_to_client, link.bytes_from_client) == (len(sent) + 4, 1)
    await link.close()
    server.close()
    await server.wait_closed()


async def test_the_first_write_of_a_loop_turn_goes_at_once_and_the_rest_in_one_send():
    got = asyncio.get_running_loop().create_future()

    async def console(reader, writer):
        got.set_result(await reader.readexactly(6))
        writer.close()

    server = await asyncio.start_server(console, "127.0.0.1", 0)
    link = await ConsoleLink.open("127.0.0.1", server.sockets[0].getsockname()[1])
    sends = []
    write = link.transport.write
    link.transport.write = lambda data: (sends.append(bytes(data)), write(data))
    for piece in (b"ab", b"cd", b"ef"):
        link.write(piece)
    assert sends == [b"ab"]  # a keystroke does not wait for the loop turn to end
    assert await asyncio.wait_for(got, 5) == b"abcdef"
    assert sends == [b"ab", b"cdef"]  # the rest of the turn: one send, not one per write
    await link.close()
    server.close()
    await server.wait_closed()
