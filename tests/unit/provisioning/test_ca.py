"""The appliance CA is name-constrained to the appliance's own names: its server certificate
verifies, and a certificate the CA's key signs for any other name does not. Verified with
cryptography's own path validation, which enforces name constraints."""

from __future__ import annotations

import datetime
import ipaddress
import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from provisioning import ca, nginx
from tests.unit.provisioning.test_renderers import perimeter_settings

NOW = datetime.datetime.now(datetime.UTC)


def verify(ca_pem: bytes, leaf: x509.Certificate, subject: x509.GeneralName) -> None:
    store = Store([x509.load_pem_x509_certificate(ca_pem)])
    # Now, not at import: collection comes minutes before the test in a full run, and a
    # certificate issued during the test is not valid yet at that earlier time.
    at = datetime.datetime.now(datetime.UTC)
    verifier = PolicyBuilder().store(store).time(at).build_server_verifier(subject)  # type: ignore[arg-type]
    verifier.verify(leaf, [])


def forge(ca_dir: Path, *names: x509.GeneralName) -> x509.Certificate:
    """What a thief of the CA's key would sign."""
    ca_cert = x509.load_pem_x509_certificate((ca_dir / ca.CA_CERT).read_bytes())
    ca_key = load_pem_private_key((ca_dir / ca.CA_KEY).read_bytes(), password=None)
    key = generate_private_key(SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(minutes=5))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )


def provisioned(tmp_path: Path) -> tuple[Path, bytes, x509.Certificate]:
    settings = perimeter_settings(
        tmp_path,
        tls_server_name="api.keep.internal",
        management_address="192.0.2.10",
        control_allowed_hosts=("console.keep.internal", "192.0.2.10"),
    )
    ca_dir = tmp_path / "ca"
    nginx.write(settings, tmp_path / "api.sock", ca_dir)
    chain = (settings.nginx_dir / "server.crt").read_bytes()
    leaf = x509.load_pem_x509_certificates(chain)[0]
    return ca_dir, (ca_dir / ca.CA_CERT).read_bytes(), leaf


def test_the_ca_is_constrained_to_the_appliances_names(tmp_path: Path) -> None:
    _, ca_pem, _ = provisioned(tmp_path)
    ext = x509.load_pem_x509_certificate(ca_pem).extensions.get_extension_for_class(
        x509.NameConstraints
    )
    assert ext.critical
    assert set(ext.value.permitted_subtrees or ()) == {
        x509.DNSName("api.keep.internal"),
        x509.DNSName("console.keep.internal"),
        x509.IPAddress(ipaddress.ip_network("198.51.100.1/32")),  # the tunnel address
        x509.IPAddress(ipaddress.ip_network("192.0.2.10/32")),  # the management address
    }
    assert ext.value.excluded_subtrees is None


def test_the_server_certificate_verifies_under_the_constraint(tmp_path: Path) -> None:
    _, ca_pem, leaf = provisioned(tmp_path)
    for subject in (
        x509.DNSName("api.keep.internal"),
        x509.DNSName("console.keep.internal"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.10")),
        x509.IPAddress(ipaddress.ip_address("198.51.100.1")),
    ):
        verify(ca_pem, leaf, subject)


@pytest.mark.parametrize(
    "name",
    [
        x509.DNSName("bank.example"),
        x509.DNSName("keep.internal"),  # the parent of a permitted name
        x509.IPAddress(ipaddress.ip_address("192.0.2.11")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
    ],
    ids=str,
)
def test_a_certificate_for_another_name_signed_by_the_ca_key_fails(
    tmp_path: Path, name: x509.GeneralName
) -> None:
    ca_dir, ca_pem, _ = provisioned(tmp_path)
    forged = forge(ca_dir, name)
    with pytest.raises(VerificationError):
        verify(ca_pem, forged, name)


def test_a_permitted_name_would_verify_so_the_refusal_is_the_constraint(tmp_path: Path) -> None:
    ca_dir, ca_pem, _ = provisioned(tmp_path)
    name = x509.DNSName("console.keep.internal")
    verify(ca_pem, forge(ca_dir, name), name)


def test_an_existing_unconstrained_ca_is_kept_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    key = generate_private_key(SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old CA")])
    old = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = old.public_bytes(Encoding.PEM)
    (ca_dir / ca.CA_CERT).write_bytes(pem)
    with caplog.at_level(logging.WARNING, logger="provisioning.ca"):
        assert ca.ensure_ca(ca_dir, [x509.DNSName("keep.internal")]) == pem
    assert "no name constraints" in caplog.text


def test_a_constrained_ca_refuses_to_sign_a_name_it_does_not_permit(tmp_path: Path) -> None:
    ca_dir, _, _ = provisioned(tmp_path)
    with pytest.raises(ValueError, match=r"does not permit other\.keep\.example"):
        ca.issue_server_cert(ca_dir, "api.keep.internal", more_names=("other.keep.example",))
