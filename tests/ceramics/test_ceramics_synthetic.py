"""The synthetic thin-section generator: seeded, in the layout of spec C.5, masks that match the
pixels, the optics of stage rotation and the class recipes."""

import numpy as np
import pandas as pd
import pytest
import torch

from thesis.ceramics import synthetic as syn
from thesis.ceramics.data import FILE_PATTERN, load_mask, scan
from thesis.ceramics.explain import central_disk, derotate


def small(**overrides):
    return syn.GeneratorConfig(**{"num_samples": 20, "image_size": 48, "min_per_class": 2, **overrides})


def test_sample_table_is_seeded_and_follows_the_spec():
    config = syn.GeneratorConfig(num_samples=178, seed=3)
    rows = syn.sample_table(config)
    assert rows == syn.sample_table(config)
    assert rows != syn.sample_table(syn.GeneratorConfig(num_samples=178, seed=4))
    counts = pd.Series([r["class_id"] for r in rows]).value_counts()
    assert len(rows) == 178 and counts.index.size == 10 and counts.min() >= 8
    assert {r["site"] for r in rows} <= {site for site, _ in syn.SITES}
    middle = [r for r in rows if r["intermediate"]]
    assert middle and all(r["class_id"] == 2 for r in middle)


def test_render_is_deterministic_and_ppl_xpl_share_geometry():
    config = small()
    sample = syn.sample_table(config)[0]
    view = syn.field_views(config)[("10X", 0)]
    a = syn.render(syn.make_section(sample, config), view, 48)
    b = syn.render(syn.make_section(sample, config), view, 48)
    for key in ("PPL", "XPL", "code", "brightness"):
        assert np.array_equal(a[key], b[key])
    assert a["PPL"].shape == a["XPL"].shape == (48, 48, 3)
    grains = a["code"] > 0
    assert 0.02 < grains.mean() < 0.95
    # XPL is dark where there is only matrix, PPL is not
    assert a["XPL"][~grains].mean() < 0.2 < a["PPL"][~grains].mean()


def test_the_10x_field_lies_inside_the_25x_field():
    config = small()
    views = syn.field_views(config)
    for k in range(config.images_per_view):
        wide, narrow = views[("2.5X", k)], views[("10X", k)]
        assert wide.width == pytest.approx(config.zoom * narrow.width)
        for axis in (0, 1):
            assert abs(narrow.centre[axis] - wide.centre[axis]) + narrow.width / 2 <= wide.width / 2


def test_rotation_turns_the_image_and_derotate_undoes_it():
    config = small(image_size=64)
    section = syn.make_section(syn.sample_table(config)[1], config)
    base = syn.field_views(config)[("10X", 0)]
    zero = syn.render(section, base, 64)["code"]
    disk = central_disk(64)
    for angle in (15.0, 45.0, 90.0):
        turned = syn.render(section, syn.View(base.centre, base.width, angle), 64)["code"]
        back = derotate(torch.from_numpy(turned.astype(np.float32)), angle, mode="nearest").numpy()
        assert (back == zero)[disk].mean() > 0.97
        assert (turned == zero)[disk].mean() < (back == zero)[disk].mean()


def test_xpl_brightness_of_an_anisotropic_grain_follows_sin2_of_twice_the_angle():
    grain = syn.Grain("quartz", 0.0, 0.0, 0.3, 0.0, optic=0.3, shape="ellipse", params={"a": 0.3, "b": 0.3})
    section = syn.make_section(syn.sample_table(small())[0], small())
    section.grains = [grain]
    levels = []
    for angle in (0.0, 22.5, 45.0):
        out = syn.render(section, syn.View((0.0, 0.0), 1.0, angle), 32, noise=0.0)
        levels.append(out["brightness"][16, 16])
        expected = np.sin(2 * (0.3 + np.deg2rad(angle))) ** 2
        assert levels[-1] == pytest.approx(expected, abs=1e-5)
    assert levels[0] + levels[2] == pytest.approx(1.0, abs=1e-5)  # 45 deg apart: sin^2 + cos^2


def test_written_layout_reads_back_with_masks(thinsections):
    index = scan(thinsections)
    base = index[index.rotation_deg == 0]
    assert len(base) == 160 and base.groupby("sample_id").size().eq(8).all()
    assert set(base.polarisation) == {"PPL", "XPL"} and set(base.magnification) == {"2.5X", "10X"}
    assert all(FILE_PATTERN.match(f.split("/")[1]) for f in index.file)
    meta = pd.read_csv(thinsections / "metadata.csv")
    assert {"sample_id", "site", "class_id", "fabric", "polarisation", "magnification", "rotation_deg"} <= set(meta)
    rotated = index[index.rotation_deg != 0]
    assert sorted(rotated.class_id.unique()) == [1, 6] and set(rotated.rotation_deg) == {30.0, 60.0}
    for cls in (2, 3, 8, 10):  # the class cue is present in the masks of its 10X fields
        rows = base[(base.class_id == cls) & (base.magnification == "10X")]
        cue = [syn.CODE[m] for m in syn.CUES[cls]]
        assert any(np.isin(load_mask(thinsections, f)[..., 0], cue).any() for f in rows.file)


def test_masks_never_show_a_cue_of_another_class(thinsections):
    index = scan(thinsections)
    own = {cls: {syn.CODE[m] for m in syn.CUES[cls]} for cls in syn.CUES}
    exclusive = {syn.CODE["microfossil"]: {2}, syn.CODE["iron_oxide"]: {10}, syn.CODE["shell"]: {7},
                 syn.CODE["basalt"]: {8}, syn.CODE["calcite"]: {1}}
    for row in index[index.magnification == "10X"].itertuples():
        codes = set(np.unique(load_mask(thinsections, row.file)[..., 0]).tolist())
        for code, classes in exclusive.items():
            assert code not in codes or row.class_id in classes, (row.file, code)
    assert own[5] == {syn.CODE["dolomite"], syn.CODE["siliceous"]}
