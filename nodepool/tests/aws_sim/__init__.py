"""An AWS stand-in for tests: moto's own HTTP server, run as a process of
its own, behind a small proxy (:mod:`.proxy`) that adds what moto's server
lacks and lets tests make AWS fail the way it does.  The driver reaches it
with the real boto3 through ``AWS_ENDPOINT_URL``."""
