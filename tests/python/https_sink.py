"""An HTTPS receiver on loopback for tests/paging.rs: Python's own HTTP server behind TLS with
CERT and KEY (PEM). Each POST's body is appended to OUT as one JSON line
{"path": ..., "body": ...} and answered 202. Prints "ready" once it listens.

usage: https_sink.py PORT CERT KEY OUT
"""

import http.server
import json
import ssl
import sys

PORT, CERT, KEY, OUT = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with open(OUT, "a", encoding="utf-8") as f:
            f.write(json.dumps({"path": self.path, "body": body.decode("utf-8")}) + "\n")
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(CERT, KEY)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
