from pattern import secpat, sha256_of


def test_seed0_matches_splitmix64_known_answers():
    # The README's known answer: SplitMix64 seeded with 0, first four outputs.
    words = [int.from_bytes(secpat(0, 32)[i : i + 8], "little") for i in range(0, 32, 8)]
    assert words == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F, 0xF88BB8A8724C81EC]


def test_offsets_are_consistent():
    whole = secpat(1, 5000)
    assert secpat(1, 1000, 1234) == whole[1234:2234]


def test_fixture_hash():
    expected = "044c4542b2d9d98bae714b9303ef9eb9b93e22cf481bf3258701548130b704e1"
    assert sha256_of(1, 9437184) == expected
