"""An SMTP server for the delivery tests (aiosmtpd): every message it
accepts is appended to OUT as a JSON line {at, from, to, subject,
message_id, list_unsubscribe, list_unsubscribe_post, text, html}, parsed
by Python's email package.

usage: smtp_sink.py PORT OUT [REJECT_FILE]
A recipient listed (one address per line) in REJECT_FILE, read at each
message, is refused with 451 (a temporary failure: the sender retries).

TLS and AUTH, from the environment: SMTP_SINK_TLS = "starttls" (STARTTLS
required before MAIL) or "implicit" (TLS from the first byte), with the
server's SMTP_SINK_CERT and SMTP_SINK_KEY (PEM); SMTP_SINK_AUTH =
"user:password" requires that login (AUTH PLAIN or LOGIN, over TLS).
Each record then also says {tls, auth_user}.
"""
import email
import email.policy
import json
import os
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


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
            # STARTTLS sets session.ssl; implicit TLS shows on the transport.
            "tls": session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
            "auth_user": auth_user(session),
        }
        with open(self.out, "a") as f:
            f.write(json.dumps(record) + "\n")
        return "250 OK"


def auth_user(session):
    data = getattr(session, "auth_data", None)
    if isinstance(data, LoginPassword):
        return data.login.decode()
    return None


def authenticator(expected):
    user, password = expected.split(":", 1)

    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    return check


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    reject_file = sys.argv[3] if len(sys.argv) > 3 else None
    options = {}
    tls = os.environ.get("SMTP_SINK_TLS")
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(os.environ["SMTP_SINK_CERT"], os.environ["SMTP_SINK_KEY"])
        if tls == "starttls":
            options.update(tls_context=context, require_starttls=True)
        elif tls == "implicit":
            options.update(ssl_context=context)
        else:
            sys.exit(f"SMTP_SINK_TLS={tls!r}: starttls or implicit")
    expected = os.environ.get("SMTP_SINK_AUTH")
    if expected:
        # aiosmtpd counts only STARTTLS as TLS for AUTH: over implicit TLS
        # the connection is encrypted from the first byte anyway.
        options.update(authenticator=authenticator(expected), auth_required=True, auth_require_tls=tls != "implicit")
    controller = Controller(Sink(out, reject_file), hostname="127.0.0.1", port=port, **options)
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        controller.stop()


if __name__ == "__main__":
    main()
