import dataclasses

import pytest

from densevlm.regions.labelled import LabelledRegion


def test_defaults_mean_not_reviewed():
    r = LabelledRegion("a.png", (1.0, 2.0, 3.0, 4.0), "bolt")
    assert (r.thing, r.mask_rle, r.width, r.status, r.region_id, r.reviewers) == (None, None, None, None, "", ())
    assert not r.rejected
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.category = "nut"


def test_rejected_follows_the_verdict():
    rejected = LabelledRegion("a.png", (0.0, 0.0, 1.0, 1.0), None, status="rejected", reviewer="ann")
    unsure = dataclasses.replace(rejected, status="unsure")
    assert rejected.rejected and not unsure.rejected
