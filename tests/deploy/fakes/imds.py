"""TEST FAKE: the EC2 instance metadata service (IMDSv2), for running the user data off EC2.

Moto has no metadata service. This one serves what the user data and the AWS CLI read on a real
instance: the instance and AMI IDs, the instance role's credentials (any key works with moto), and
the autoscaling target lifecycle state, which a test flips to "Terminated" to simulate scale-in.
Like the real one with HttpTokens=required, it refuses reads without a session token, so a user
data that fell back to IMDSv1 would fail here.
"""

import datetime
import http.server
import json
import secrets
import threading

ROLE = "gantry-test-worker-role"


class FakeImds:
    def __init__(self, instance_id: str, ami_id: str, region: str = "us-east-1"):
        self.values = {
            "instance-id": instance_id,
            "ami-id": ami_id,
            "placement/region": region,
            "autoscaling/target-lifecycle-state": "InService",
            "iam/security-credentials/": ROLE,
        }
        self.tokens: set[str] = set()
        self.refused_without_token = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _credentials(self) -> str:
        now = datetime.datetime.now(datetime.timezone.utc)
        return json.dumps({
            "Code": "Success",
            "LastUpdated": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Type": "AWS-HMAC",
            "AccessKeyId": "ASIAFAKEIMDSTESTING",
            "SecretAccessKey": "fake-imds-secret",
            "Token": "fake-imds-session-token",
            "Expiration": (now + datetime.timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        })

    def _handler(self):
        imds = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self):
                if self.path != "/latest/api/token":
                    return self._reply(404)
                token = secrets.token_hex(16)
                imds.tokens.add(token)
                self._reply(200, token)

            def do_GET(self):
                if self.headers.get("X-aws-ec2-metadata-token") not in imds.tokens:
                    imds.refused_without_token += 1
                    return self._reply(401)
                prefix = "/latest/meta-data/"
                if not self.path.startswith(prefix):
                    return self._reply(404)
                key = self.path[len(prefix):]
                if key == f"iam/security-credentials/{ROLE}":
                    return self._reply(200, imds._credentials())
                if key in imds.values:
                    return self._reply(200, imds.values[key])
                self._reply(404)

        return Handler
