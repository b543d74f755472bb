"""A real SMTP server on loopback for tests/paging.rs: aiosmtpd, saving every message it
accepts, decoded, as <outdir>/<n>.eml (written to a temporary name, then renamed, so a reader never sees
half a mail). Refuses any recipient gone@… with 550, defers later@… with 451 twice, then
takes it. Prints "ready" once it listens.

With starttls or implicit, it speaks TLS with CERT and KEY (PEM): starttls refuses mail
before STARTTLS (530), implicit takes TLS from the first byte. Each saved mail says how it
came, as an X-TLS header: the TLS version, or "none".

usage: smtp_sink.py PORT OUTDIR [starttls|implicit CERT KEY]
"""

import threading
import email
import email.policy
import logging
import os
import ssl
import sys

from aiosmtpd.controller import Controller


class Save:
    def __init__(self, outdir):
        self.outdir = outdir
        self.count = len([n for n in os.listdir(outdir) if n.endswith(".eml")])

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        # A mailbox that no longer exists, as a relay answers for a departed colleague.
        if address.startswith("gone@"):
            return "550 5.1.1 no such user"
        # A mailbox whose server is busy: deferred twice, then taken.
        if address.startswith("later@"):
            self.deferred = getattr(self, "deferred", 0) + 1
            if self.deferred <= 2:
                return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        path = os.path.join(self.outdir, f"{self.count:04d}.eml")
        tmp = path + ".tmp"
        # Decoded as a mail client would show it: unfolded headers, the text body.
        message = email.message_from_bytes(
            envelope.original_content or envelope.content, policy=email.policy.default
        )
        tls = server.transport.get_extra_info("ssl_object") if server.transport else None
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(f"X-TLS: {tls.version() if tls else 'none'}\n")
            f.write(f"X-Envelope-From: {envelope.mail_from}\n")
            f.write(f"X-Envelope-To: {','.join(envelope.rcpt_tos)}\n")
            for key, value in message.items():
                f.write(f"{key}: {value}\n")
            f.write("\n")
            f.write(message.get_content())
        os.rename(tmp, path)
        return "250 Message accepted for delivery"


def main():
    port, outdir = int(sys.argv[1]), sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    tls = {}
    if len(sys.argv) > 3:
        mode, cert, key = sys.argv[3:6]
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        if mode == "starttls":
            tls = {"tls_context": context, "require_starttls": True}
        elif mode == "implicit":
            tls = {"ssl_context": context}
        else:
            sys.exit(f"unknown TLS mode {mode!r}")
        # A client refusing the certificate is what a test wants; not a traceback each time.
        logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    controller = Controller(Save(outdir), hostname="127.0.0.1", port=port, **tls)
    controller.start()
    print("ready", flush=True)
    try:
        threading.Event().wait()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
