"""A small SMTP server on loopback for tests/paging.rs that misbehaves on purpose: it answers
the end of the first message's DATA only after DELAY seconds (longer than the daemon's
send_timeout_secs, so the daemon gives up on it mid-dialogue), and answers the third
message with 451 (try again later). Every event goes to LOG as one JSON object a line.
Prints "ready" once it listens.

usage: stall_smtp.py PORT LOG DELAY
"""

import asyncio
import json
import sys

PORT, LOG, DELAY = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
messages = 0


def log(**event):
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(event) + "\n")


async def session(reader, writer):
    global messages
    writer.write(b"220 stall ESMTP\r\n")
    await writer.drain()
    while True:
        line = await reader.readline()
        if not line:
            return
        command = line.decode(errors="replace").strip().upper()
        if command.startswith("EHLO"):
            writer.write(b"250-stall\r\n250 8BITMIME\r\n")
        elif command.startswith(("HELO", "MAIL", "RCPT", "RSET", "NOOP")):
            writer.write(b"250 OK\r\n")
        elif command == "DATA":
            writer.write(b"354 go ahead\r\n")
            await writer.drain()
            subject = ""
            while True:
                body = await reader.readline()
                if body in (b".\r\n", b".\n", b""):
                    break
                if body.startswith(b"Subject:"):
                    subject = body.decode(errors="replace").strip()
            messages += 1
            number = messages
            if number == 1:
                await asyncio.sleep(DELAY)
            if number == 3:
                log(message=number, subject=subject, answer=451)
                writer.write(b"451 4.7.1 try again later\r\n")
            else:
                log(message=number, subject=subject, answer=250)
                writer.write(b"250 accepted\r\n")
        elif command == "QUIT":
            writer.write(b"221 bye\r\n")
            await writer.drain()
            writer.close()
            return
        else:
            writer.write(b"502 not implemented\r\n")
        try:
            await writer.drain()
        except ConnectionError:
            return


async def main():
    server = await asyncio.start_server(session, "127.0.0.1", PORT)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
