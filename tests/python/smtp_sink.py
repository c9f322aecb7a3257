"""A real SMTP server on loopback for the mail tests: aiosmtpd on 127.0.0.1:PORT, writing each
message it accepts as one JSON line {"from", "to", "subject", "text", "html", "raw"} to FILE
(subject and bodies decoded, as a mail client shows them); a recipient `nosuchuser@…` is refused
550 at RCPT, every MAIL FROM 530 while FILE.refuse-mail exists, and refused with the reply
written in FILE.refuse-sender (e.g. `553 5.7.1 Sender address rejected`) while that exists. Prints "ready" once it listens;
stops when its standard input closes (the test drops it).

Usage: smtp_sink.py PORT FILE
"""

import email
import email.policy
import json
import os
import sys

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, path):
        self.path = path

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        # While FILE.refuse-mail exists: the account's refusal at MAIL FROM (a login wanted).
        if os.path.exists(self.path + ".refuse-mail"):
            return "530 5.7.0 Authentication required"
        # While FILE.refuse-sender exists: the account may not send as this address.
        try:
            with open(self.path + ".refuse-sender", encoding="utf-8") as f:
                return f.read().strip()
        except FileNotFoundError:
            pass
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        # A mailbox that does not exist: refused for good, as a real server does.
        if address.startswith("nosuchuser@"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        text = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        record = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "subject": str(msg["subject"]),
            "text": text.get_content() if text is not None else "",
            "html": html.get_content() if html is not None else "",
            "raw": raw.decode("utf-8", "replace"),
            "helo": session.host_name,
            "message_id": str(msg["message-id"]),
        }
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return "250 Message accepted for delivery"


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    controller = Controller(Sink(path), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()
