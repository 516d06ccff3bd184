"""The appliance CA: generated once at provisioning, it signs NGINX's server certificate and
its certificate goes into every client bundle. Keys are written 0600.

The CA is name-constrained (a critical NameConstraints extension) to exactly the names and
addresses its server certificate carries: the API's TLS name, the console's names and the
tunnel and management addresses (each a /32 or /128). A leaked CA key can then mint no
certificate a client would accept for any other name. A CA made before the constraint
existed is kept (replacing it would break every client's trust in `ca.crt`) and logged as
unconstrained; docs/operations.md says how to replace it."""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import NameOID

from durable import create_secret, replace
from keep.settings import PerimeterSettings
from provisioning import ipam

CA_CERT = "ca.crt"
CA_KEY = "ca.key"

log = logging.getLogger(__name__)


def server_names(
    name: str, addresses: Iterable[str] = (), more_names: Iterable[str] = ()
) -> list[x509.GeneralName]:
    """The server certificate's names, and so the CA's permitted ones: DNS names first, then
    IP addresses. A console name NGINX and Django read as "every subdomain" (`.name`,
    `*.name`) stays a wildcard here."""
    more = list(more_names)
    ips = {ip for ip in (_ip(a) for a in (*addresses, *more)) if ip is not None}
    dns = dict.fromkeys([name, *(n for n in more if _ip(n) is None)])
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    names += [x509.IPAddress(ip) for ip in sorted(ips, key=str)]
    return names


def name_constraints(names: Iterable[x509.GeneralName]) -> x509.NameConstraints:
    """Permitted subtrees for `names`: a DNS name with its subdomains (RFC 5280's only DNS
    subtree), and each address alone."""
    permitted: dict[str, x509.GeneralName] = {}
    for general in names:
        if isinstance(general, x509.DNSName):
            bare = general.value.removeprefix("*.").removeprefix(".")
            permitted.setdefault(f"dns:{bare}", x509.DNSName(bare))
        elif isinstance(general, x509.IPAddress):
            ip = general.value
            net = ipaddress.ip_network(f"{ip}/{ip.max_prefixlen}")
            permitted.setdefault(f"ip:{net}", x509.IPAddress(net))
    return x509.NameConstraints(permitted_subtrees=list(permitted.values()), excluded_subtrees=None)


def ensure_ca(
    directory: Path,
    permitted: Iterable[x509.GeneralName],
    name: str = "Keep appliance CA",
    days: int = 3650,
) -> bytes:
    """The CA certificate (PEM) in `directory`, created with its key on first use and
    constrained to `permitted`. An existing CA is returned as it is."""
    cert_path = directory / CA_CERT
    if cert_path.exists():
        pem = cert_path.read_bytes()
        try:
            x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(
                x509.NameConstraints
            )
        except x509.ExtensionNotFound:
            log.warning(
                "the appliance CA at %s has no name constraints: a leak of its key could "
                "mint certificates for any name (docs/operations.md: replacing the CA)",
                cert_path,
            )
        return pem
    constraints = name_constraints(permitted)
    if not constraints.permitted_subtrees:
        raise ValueError("the appliance CA needs at least one name to permit")
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
        .add_extension(constraints, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    create_secret(
        directory / CA_KEY, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    pem = cert.public_bytes(Encoding.PEM)
    replace(cert_path, pem, mode=0o644)  # control reads it for bundles, whatever the umask
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
    names = server_names(name, addresses, more_names)
    ca_pem = ensure_ca(ca_dir, names)
    ca_cert = x509.load_pem_x509_certificate(ca_pem)
    _check_permitted(ca_cert, names)
    ca_key = load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    key = generate_private_key(SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
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
        # RFC 5280 path building (and cryptography's verifier) wants the issuer's key id.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return cert.public_bytes(Encoding.PEM) + ca_pem, key_pem


def _check_permitted(ca_cert: x509.Certificate, names: list[x509.GeneralName]) -> None:
    """A constrained CA signs no name it does not permit: clients would refuse it."""
    try:
        have = ca_cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return  # an old, unconstrained CA: ensure_ca has warned
    allowed = list(have.permitted_subtrees or ())
    missing = [g for g in names if not any(_within(g, p) for p in allowed)]
    if missing:
        shown = ", ".join(str(g.value) for g in missing)
        raise ValueError(
            f"the appliance CA does not permit {shown}: replace the CA to serve new names "
            "(docs/operations.md)"
        )


def _within(name: x509.GeneralName, subtree: x509.GeneralName) -> bool:
    if isinstance(name, x509.DNSName) and isinstance(subtree, x509.DNSName):
        bare, root = name.value.removeprefix("*.").removeprefix(".").lower(), subtree.value.lower()
        return bare == root or bare.endswith("." + root)
    if isinstance(name, x509.IPAddress) and isinstance(subtree, x509.IPAddress):
        return name.value in subtree.value  # type: ignore[operator]
    return False


def appliance_names(settings: PerimeterSettings) -> list[x509.GeneralName]:
    """What the appliance's server certificate names (provisioning.nginx issues it from the
    same settings), and so what its CA permits."""
    return server_names(
        settings.tls_server_name,
        (ipam.server_address(settings.wg_subnet), settings.management_address),
        settings.control_allowed_hosts,
    )


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        return None
