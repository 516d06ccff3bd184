from appliance.auth import Grant, KeyRing, Principal, key_digest, new_key


def test_only_known_keys_authenticate_and_the_principal_is_the_digest() -> None:
    key, other = new_key(), new_key()
    ring = KeyRing({key_digest(key): Grant(peer_id="peer-7", client_id="acme")})
    assert ring.principal(key) == Principal(key_digest(key), "peer-7", "acme")
    assert ring.principal(other) is None
    assert ring.principal("") is None
    assert ring.principal(key + "x") is None


def test_an_expired_key_no_longer_authenticates() -> None:
    key = new_key()
    ring = KeyRing({key_digest(key): Grant(expires_at=1000.0)})
    assert ring.principal(key, now=999.0) is not None
    assert ring.principal(key, now=1000.0) is None


def test_keys_are_random_and_long() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(k) >= 40 for k in keys)


def test_empty_ring_accepts_nothing() -> None:
    assert KeyRing({}).principal("keep-anything") is None
