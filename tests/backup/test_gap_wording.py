"""How a WAL gap is told: the number of missing segments in words."""

from __future__ import annotations

from verger.backup.gaps import Gap


def test_a_gap_says_how_many_segments_are_missing_in_plain_words() -> None:
    """One missing segment reads 'a WAL segment is missing', more read '2 WAL
    segments are missing', each with the range and the times it breaks."""
    one = Gap("S1", "S1", 1, 10.0, None)
    two = Gap("S1", "S2", 2, None, 20.0)

    def when(moment: float | None) -> str:
        return f"t{moment:g}"

    assert one.sentence(when) == (
        "a WAL segment is missing from the archive (S1): no restore can reach "
        "a point from t10 until now"
    )
    assert two.sentence(when) == (
        "2 WAL segments are missing from the archive (S1 to S2): no restore can "
        "reach a point from the backup before it until t20"
    )
