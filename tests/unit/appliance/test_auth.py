import time

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


def test_a_lookup_takes_as_long_with_a_hundred_thousand_keys_as_with_one() -> None:
    key = new_key()
    small = KeyRing({key_digest(key): Grant()})
    big = KeyRing(
        {**{key_digest(new_key()): Grant() for _ in range(100_000)}, key_digest(key): Grant()}
    )

    def best_of(ring: KeyRing) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(20):
                assert ring.principal(key) is not None
            times.append(time.perf_counter() - start)
        return min(times)

    # Measured against each other in the same run: a scan of every key would be ~10^4 x.
    assert best_of(big) < 20 * best_of(small) + 0.001
