"""A throwaway PKI for trying FATE across sites on one machine (and for the tests and the bench):
a CA and, per party, a certificate naming `party-<id>` (CN and DNS name) for both serving and
dialling, plus a route table per party.

    python -m server.sites.certs DIR 9999:127.0.0.1:9371 10000:127.0.0.1:9372

writes DIR/ca.pem, DIR/party-<id>.pem/.key and DIR/route_table_<id>.json. Real deployments use
their own CA; the keys here are unencrypted EC P-256 keys valid for 30 days.
"""
from __future__ import annotations

import datetime
import json
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .routes import party_name


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _builder(subject: str, issuer: x509.Name | None, public_key, days: int) -> x509.CertificateBuilder:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days)))


def make_ca(name: str, days: int = 30):
    """(certificate, key) of a new CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(name, None, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    return cert, key


def write_ca(ca, path: str) -> str:
    with open(path, "wb") as f:
        f.write(_pem(ca[0]))
    return path


def party_cert(ca, party: int, directory: str, stem: str = "", days: int = 30) -> tuple[str, str]:
    """Writes <stem>.pem and <stem>.key (default party-<id>) signed by `ca`; returns their paths."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    name = party_name(party)
    cert = (_builder(name, ca_cert.subject, key.public_key(), days)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    stem = os.path.join(directory, stem or name)
    with open(stem + ".pem", "wb") as f:
        f.write(_pem(cert))
    with open(stem + ".key", "wb") as f:
        f.write(_pem(key))
    os.chmod(stem + ".key", 0o600)
    return stem + ".pem", stem + ".key"


def route_table(parties: dict[int, tuple[str, int]], own: int) -> dict:
    """The route table of party `own` (certificates named as party_cert writes them, beside it)."""
    return {"route_table": {str(p): {"default": [{"ip": ip, "port": port}]} for p, (ip, port) in parties.items()},
            "permission": {"default_allow": True},
            "tls": {"cert": f"{party_name(own)}.pem", "key": f"{party_name(own)}.key", "ca": "ca.pem"}}


def write_site_pki(directory: str, parties: dict[int, tuple[str, int]]) -> dict[int, str]:
    """CA, one certificate per party and each party's route table in `directory`; party -> its table's path."""
    os.makedirs(directory, exist_ok=True)
    ca = make_ca("taskhub FATE parties CA")
    write_ca(ca, os.path.join(directory, "ca.pem"))
    tables = {}
    for party in parties:
        party_cert(ca, party, directory)
        tables[party] = os.path.join(directory, f"route_table_{party}.json")
        with open(tables[party], "w") as f:
            json.dump(route_table(parties, party), f, indent=1)
    return tables


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    parties = {}
    for spec in argv[1:]:
        party, ip, port = spec.rsplit(":", 2) if spec.count(":") >= 2 else (spec, "", "")
        if not (party.isdigit() and ip and port.isdigit()):
            print(f"expected PARTY:IP:PORT, got {spec!r}", file=sys.stderr)
            return 2
        parties[int(party)] = (ip, int(port))
    for party, path in write_site_pki(argv[0], parties).items():
        print(f"party {party}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
