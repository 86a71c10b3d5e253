import pytest

from milimo_engine import frames as fr

pytestmark = pytest.mark.fast  # the pure layer: `make test-fast`



@pytest.mark.parametrize("asked,rendered", [(1, 1), (2, 9), (9, 9), (10, 17), (25, 25), (30, 33), (121, 121),
                                            (122, 129)])
def test_render_length_is_smallest_valid_cover(asked, rendered):
    assert fr.render_length(asked) == rendered
    assert (rendered - 1) % 8 == 0 and rendered >= asked


@pytest.mark.parametrize("value,nearest", [(250, 256), (300, 320), (20, 64), (97, 128), (95, 64)])
def test_nearest_multiple(value, nearest):
    assert fr.nearest_multiple(value, 64) == nearest


def test_latent_and_pixel_frames_round_trip():
    for k in range(6):
        n = 8 * k + 1
        assert fr.pixel_frames(fr.latent_frames(n)) == n
    assert fr.largest_valid_length(130) == 129
