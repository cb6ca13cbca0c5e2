"""The simulated cluster's certificate authority and token signer.

Each simulator gets a fresh CA (ECDSA P-256, quick to generate).  Its PEM
is what a real cluster puts in the kubeconfig's ``certificate-authority-data``
and in every service-account token secret's ``ca.crt``; with ``tls=True``
it also signs the API server's certificate for 127.0.0.1, so a client that
verifies against that CA works exactly as against a real cluster.
Service-account tokens are real JWTs (ES256) signed by the same key.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import tempfile
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class ClusterPKI:
    """A CA, a serving certificate for 127.0.0.1 and a JWT signer."""

    def __init__(self, name: str) -> None:
        now = datetime.datetime.now(datetime.UTC)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}-ca")])
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                              content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False),
                critical=True)
            .sign(self._ca_key, hashes.SHA256())
        )
        self._server_key = ec.generate_private_key(ec.SECP256R1())
        self._server_cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name)
            .public_key(self._server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.DNSName("kubernetes.default.svc"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)

    def write_server_files(self) -> tuple[str, str]:
        """Write the serving certificate and key to a private temp dir for ssl."""
        directory = tempfile.mkdtemp(prefix="k8s-sim-")
        cert_path = os.path.join(directory, "apiserver.crt")
        key_path = os.path.join(directory, "apiserver.key")
        with open(cert_path, "wb") as f:
            f.write(self._server_cert.public_bytes(serialization.Encoding.PEM))
            f.write(self.ca_pem)
        with open(key_path, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(self._server_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
        return cert_path, key_path

    def sign_jwt(self, claims: dict[str, Any]) -> str:
        header = {"alg": "ES256", "kid": "k8s-sim", "typ": "JWT"}
        signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                         + _b64url(json.dumps(claims, separators=(",", ":")).encode()))
        der = self._ca_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
