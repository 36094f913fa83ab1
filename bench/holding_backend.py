"""A backend that never answers: the shadow of bench/run's row whose copies
are dropped because the shadow is full.

`python3 bench/holding_backend.py PORT` listens on 127.0.0.1:PORT. It
answers `GET /` (the health check, so the release is healthy and gets its
copies) and holds every other request: no answer, ever; whatever else comes
on that connection is read and thrown away until the peer closes it. The
copies in flight therefore stay in flight until serve's upstream timeout,
the shadow's queue fills, and every further copy is dropped and counted.
"""

import asyncio
import sys

HEALTHY = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


async def connection(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1:2]
            if target == [b"/"]:
                writer.write(HEALTHY)
                await writer.drain()
                continue
            # Held: never answered. Read on only to see the peer close.
            while await reader.read(65536):
                pass
            return
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port):
    server = await asyncio.start_server(connection, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
