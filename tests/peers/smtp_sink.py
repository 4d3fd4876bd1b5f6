"""An SMTP server for the delivery tests (aiosmtpd): every message it
accepts is appended to OUT as a JSON line {at, from, to, subject,
message_id, list_unsubscribe, list_unsubscribe_post, text, html}, parsed
by Python's email package.

usage: smtp_sink.py PORT OUT [REJECT_FILE]
A recipient listed (one address per line) in REJECT_FILE, read at each
message, is refused with 451 (a temporary failure: the sender retries).
"""
import email
import email.policy
import json
import os
import sys
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out, reject_file):
        self.out = out
        self.reject_file = reject_file

    def rejected(self):
        if not self.reject_file or not os.path.exists(self.reject_file):
            return set()
        with open(self.reject_file) as f:
            return {line.strip().lower() for line in f if line.strip()}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.rejected():
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        # Read back as a mail client would (Python's own parser, not ours).
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        plain = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        record = {
            "at": time.time(),
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "subject": str(msg.get("subject", "")),
            "message_id": str(msg.get("message-id", "")),
            "list_unsubscribe": str(msg.get("list-unsubscribe", "")),
            "list_unsubscribe_post": str(msg.get("list-unsubscribe-post", "")),
            "text": plain.get_content() if plain else "",
            "html": html.get_content() if html else "",
        }
        with open(self.out, "a") as f:
            f.write(json.dumps(record) + "\n")
        return "250 OK"


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    reject_file = sys.argv[3] if len(sys.argv) > 3 else None
    controller = Controller(Sink(out, reject_file), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        controller.stop()


if __name__ == "__main__":
    main()
