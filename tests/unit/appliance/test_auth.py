from appliance.auth import KeyRing, key_digest, new_key


def test_only_known_keys_authenticate_and_the_principal_is_the_digest() -> None:
    key, other = new_key(), new_key()
    ring = KeyRing([key_digest(key)])
    assert ring.principal(key) == key_digest(key)
    assert ring.principal(other) is None
    assert ring.principal("") is None
    assert ring.principal(key + "x") is None


def test_keys_are_random_and_long() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(k) >= 40 for k in keys)


def test_empty_ring_accepts_nothing() -> None:
    assert KeyRing([]).principal("keep-anything") is None
