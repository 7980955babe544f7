#!/usr/bin/env python3
"""A local SAML service provider configured as AWS sign-in, for rolegate's browser test.

It listens on loopback and takes the auto-submitted SAMLResponse at its ACS URL. Each response is
validated by sp_validate.py (pysaml2, signatures checked by xmlsec1) as AWS's entity
(``urn:amazon:webservices``) with this server's ACS as the recipient, at the current time. The
outcome is written as JSON to ``--result`` and shown on the page the browser lands on.

    python sp_server.py --idp-metadata FILE --result FILE [--port 0] [--entity E]

Prints one line ``{"acs": "http://127.0.0.1:PORT/saml/acs"}`` once it listens. The metadata file
is read per request, so it may be written after the server starts.
"""
import argparse
import html
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idp-metadata", required=True)
    ap.add_argument("--result", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--entity", default="urn:amazon:webservices")
    args = ap.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            if self.path != "/saml/acs":
                self.send_error(404)
                return
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8"))
            response = (form.get("SAMLResponse") or [""])[0]
            relay = (form.get("RelayState") or [None])[0]
            with tempfile.NamedTemporaryFile("w", suffix=".b64", delete=False) as f:
                f.write(response)
            try:
                run = subprocess.run(
                    [sys.executable, os.path.join(HERE, "sp_validate.py"),
                     "--idp-metadata", args.idp_metadata, "--response", f.name,
                     "--now", str(int(time.time())), "--entity", args.entity, "--acs", acs,
                     "--strict-audience"],
                    capture_output=True, text=True, timeout=60,
                )
            finally:
                os.unlink(f.name)
            if run.returncode == 0:
                outcome = {"ok": True, "result": json.loads(run.stdout), "relay_state": relay}
            else:
                outcome = {"ok": False, "error": (run.stdout + run.stderr).strip(), "relay_state": relay}
            with open(args.result + ".tmp", "w") as out:
                json.dump(outcome, out)
            os.replace(args.result + ".tmp", args.result)
            title = "Signed in to the console" if outcome["ok"] else "Sign-in rejected"
            body = (
                f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title></head>"
                f"<body><h1 id=title>{title}</h1><pre id=outcome>{html.escape(json.dumps(outcome, indent=2))}</pre></body></html>"
            ).encode()
            self.send_response(200 if outcome["ok"] else 403)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    acs = f"http://127.0.0.1:{server.server_address[1]}/saml/acs"
    print(json.dumps({"acs": acs}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
