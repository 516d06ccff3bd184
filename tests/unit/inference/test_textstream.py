from inference.textstream import TextStream


def feed(stream: TextStream, pieces: list[bytes]) -> list[str]:
    return [stream.push(piece) for piece in pieces]


def test_multibyte_character_split_across_tokens_is_emitted_whole() -> None:
    euro = "€".encode()  # three bytes
    stream = TextStream()
    out = feed(stream, [b"a", euro[:1], euro[1:2], euro[2:], b"b"])
    assert out == ["a", "", "", "€", "b"]
    assert stream.finish() == ""


def test_truncated_character_at_the_end_becomes_replacement() -> None:
    stream = TextStream()
    assert stream.push("é".encode()[:1]) == ""
    assert stream.finish() == "\ufffd"


def test_stop_string_inside_a_token_cuts_before_it() -> None:
    stream = TextStream(["END"])
    assert stream.push(b"hello EN") == "hello "
    assert stream.push(b"D and more") == ""
    assert stream.stopped
    assert stream.finish() == ""


def test_partial_stop_prefix_is_released_when_it_diverges() -> None:
    stream = TextStream(["</s>"])
    assert stream.push(b"a</") == "a"
    assert stream.push(b"b") == "</b"
    assert not stream.stopped


def test_held_prefix_is_flushed_at_the_end() -> None:
    stream = TextStream(["STOP"])
    assert stream.push(b"xST") == "x"
    assert stream.finish() == "ST"


def test_earliest_of_several_stops_wins() -> None:
    stream = TextStream(["zz", "b"])
    assert stream.push(b"abczz") == "a"
    assert stream.stopped
