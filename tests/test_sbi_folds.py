"""Identity-grouped folds: no identity on both sides of a split."""
from __future__ import annotations

import pytest

from tools.sbi.folds import grouped_folds, identity_groups

FILES = [
    ("real/dfl_Keanu_Reeves_0_L.mp4", "real"), ("fake/dfl_Keanu_Reeves_0_R.mp4", "fake"),
    ("real/dfl_Keanu_Reeves_1_L.mp4", "real"), ("fake/dfl_Keanu_Reeves_1_R.mp4", "fake"),
    ("fake/dfl_Dean_Wiesel_2_full.mp4", "fake"), ("real/dfl_Dean_Wiesel_0_L.mp4", "real"),
    ("real/dfl_Kim_Jarrey_0_L.mp4", "real"), ("fake/dfl_Kim_Jarrey_0_R.mp4", "fake"),
    ("real/roop_target.mp4", "real"), ("fake/roop_output.mp4", "fake"),
    ("fake/sadtalker_gen_art_0__japanese.mp4", "fake"), ("fake/sadtalker_gen_art_0__japanese_es1.mp4", "fake"),
    ("fake/aniportrait_cxk_gen.mp4", "fake"), ("fake/aniportrait_zl_gen.mp4", "fake"),
]


def test_identity_groups_follow_the_documented_rule() -> None:
    files, labels = zip(*FILES)
    g = dict(zip(files, identity_groups(list(files), list(labels))))
    assert g["real/dfl_Keanu_Reeves_0_L.mp4"] == g["fake/dfl_Keanu_Reeves_1_R.mp4"] == "dfl_Keanu_Reeves"
    assert g["fake/dfl_Dean_Wiesel_2_full.mp4"] == g["real/dfl_Dean_Wiesel_0_L.mp4"]
    assert g["real/roop_target.mp4"] == g["fake/roop_output.mp4"]
    assert g["fake/sadtalker_gen_art_0__japanese.mp4"] == g["fake/sadtalker_gen_art_0__japanese_es1.mp4"]
    assert g["fake/aniportrait_cxk_gen.mp4"] != g["fake/aniportrait_zl_gen.mp4"]


@pytest.mark.parametrize("k", [2, 3, 4])
def test_grouped_folds_partition_files_without_splitting_a_group(k: int) -> None:
    files, labels = map(list, zip(*FILES))
    folds = grouped_folds(files, labels, k)
    assert len(folds) == k and all(folds)
    assert sorted(f for fold in folds for f in fold) == sorted(files)
    group = dict(zip(files, identity_groups(files, labels)))
    for i, fold in enumerate(folds):
        others = {group[f] for j, other in enumerate(folds) if j != i for f in other}
        assert not {group[f] for f in fold} & others


def test_grouped_folds_rejects_more_folds_than_groups() -> None:
    files, labels = map(list, zip(*FILES))
    with pytest.raises(ValueError):
        grouped_folds(files, labels, 50)
