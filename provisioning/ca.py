"""The appliance CA: generated once at provisioning, it signs NGINX's server certificate and
its certificate goes into every client bundle. Keys are written 0600."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from cryptography.x509.oid import NameOID

from durable import create_secret

CA_CERT = "ca.crt"
CA_KEY = "ca.key"


def ensure_ca(directory: Path, name: str = "Keep appliance CA", days: int = 3650) -> bytes:
    """The CA certificate (PEM) in `directory`, created with its key on first use."""
    cert_path = directory / CA_CERT
    if cert_path.exists():
        return cert_path.read_bytes()
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)  # the key inside is 0600
    key = generate_private_key(SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    create_secret(
        directory / CA_KEY, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    pem = cert.public_bytes(Encoding.PEM)
    cert_path.write_bytes(pem)
    return pem


def issue_server_cert(
    ca_dir: Path,
    name: str,
    addresses: tuple[str, ...] = (),
    more_names: tuple[str, ...] = (),
    days: int = 825,
) -> tuple[bytes, bytes]:
    """A server certificate for `name` (and `addresses`), signed by the appliance CA.
    Returns (certificate chain PEM, private key PEM); the caller writes the key 0600."""
    import ipaddress

    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    ca_pem = ensure_ca(ca_dir)
    ca_cert = x509.load_pem_x509_certificate(ca_pem)
    ca_key = load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    key = generate_private_key(SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ips = {ipaddress.ip_address(a) for a in (*addresses, *more_names) if _is_ip(a)}
    dns = dict.fromkeys([name, *(n for n in more_names if not _is_ip(n))])
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    names += [x509.IPAddress(ip) for ip in sorted(ips, key=str)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return cert.public_bytes(Encoding.PEM) + ca_pem, key_pem


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
