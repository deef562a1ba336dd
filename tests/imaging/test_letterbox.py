import numpy as np
import pytest
import torch
from PIL import Image

from densevlm.errors import DenseVLMError
from densevlm.imaging import MIN_SIDE, check_image_size, check_input_size, letterbox, plan_letterbox


def test_plan_of_a_wide_image():
    plan = plan_letterbox(400, 300, 200, 16)
    assert (plan.scale, plan.width, plan.height, plan.input_width, plan.input_height) == (0.5, 200, 150, 208, 160)
    square = plan_letterbox(400, 300, 200, 16, square=True)
    assert (square.width, square.height, square.input_width, square.input_height) == (200, 150, 208, 208)


def test_an_input_side_below_one_patch_is_refused():
    check_input_size(8, 8)  # one patch is the least
    with pytest.raises(DenseVLMError, match="input size 7 is smaller than one patch of the model \\(8 px\\)"):
        check_input_size(7, 8)
    with pytest.raises(DenseVLMError, match="use --size 16 or more"):
        check_input_size(12, 16)
    check_input_size(4096, 16)
    with pytest.raises(DenseVLMError, match="input size 4097 is above the largest one accepted \\(4096 px\\)"):
        check_input_size(4097, 16)


@pytest.mark.parametrize("width, height, size, message", [
    (1, 1, 64, "image is 1x1 px, too small to recognise anything (at least 8 px on each side)"),
    (1, 4000, 64, "image is 1x4000 px, too small"),
    (3840, 64, 64, "image is 3840x64 px, too long and thin for a 64 px input (it would be 64x1 px)"),
    (64, 800, 64, "it would be 5x64 px); cut it into pieces or pass a larger --size"),
])
def test_images_too_small_or_thin_to_recognise_are_refused(width, height, size, message):
    with pytest.raises(DenseVLMError) as err:
        letterbox(Image.new("RGB", (width, height)), size, 8, (0.5,) * 3, (0.5,) * 3)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_smallest_images_that_pass():
    check_image_size(MIN_SIDE, MIN_SIDE, 64)  # 8 x 8, enlarged to 64 x 64
    _, plan = letterbox(Image.new("RGB", (3840, 480)), 64, 8, (0.5,) * 3, (0.5,) * 3)  # 64 x 8 inside the input
    assert (plan.width, plan.height) == (64, 8)
    check_image_size(3840, 64, 512)  # the same strip at a larger input: 512 x 9


def test_boxes_and_points_by_hand():
    plan = plan_letterbox(50, 36, 56, 8, square=True)  # scale 56 / 50 = 1.12, content 56 x 40
    boxes = np.array([[10.0, 5.0, 30.0, 25.0], [0.0, 0.0, 50.0, 36.0]])
    np.testing.assert_allclose(plan.to_input(boxes), [[11.2, 5.6, 33.6, 28.0], [0.0, 0.0, 56.0, 40.32]])
    np.testing.assert_allclose(plan.to_original(np.array([[56.0, 56.0]])), [[50.0, 50.0]])  # padding maps beyond
    t = plan.to_input(torch.tensor([[10.0, 5.0]]))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    torch.testing.assert_close(t, torch.tensor([[11.2, 5.6]]))


def test_kinds_and_dtypes_are_kept():
    plan = plan_letterbox(400, 300, 200, 16)
    assert plan.to_input(np.zeros((0, 4))).shape == (0, 4)
    assert plan.to_input(np.ones((2, 4), dtype=np.float32)).dtype == np.float32
    assert plan.to_original(torch.ones(3, 4, dtype=torch.float64)).dtype == torch.float64
    listed = plan.to_input([[100, 40, 300, 260]])
    assert isinstance(listed, np.ndarray)
    np.testing.assert_array_equal(listed, [[50.0, 20.0, 150.0, 130.0]])
    np.testing.assert_array_equal(plan.to_input(np.array([2.0, 4.0, 6.0, 8.0])), [1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize("width,height,size,multiple", [(640, 480, 448, 14), (37, 91, 64, 16), (1, 1, 32, 8)])
def test_round_trips(width, height, size, multiple):
    plan = plan_letterbox(width, height, size, multiple, square=True)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1, (20, 2)) * [width, height]
    boxes = np.concatenate([xy, xy + rng.uniform(0, 5, (20, 2))], axis=1)
    np.testing.assert_allclose(plan.to_original(plan.to_input(boxes)), boxes, rtol=1e-12)
    np.testing.assert_allclose(plan.to_input(plan.to_original(boxes)), boxes, rtol=1e-12)
    t = torch.from_numpy(boxes).float()
    torch.testing.assert_close(plan.to_original(plan.to_input(t)), t)
    # the content's corners map onto the original image's corners (up to the size rounding)
    far = plan.to_original(np.array([plan.width, plan.height], dtype=np.float64))
    assert abs(far[0] - width) <= 0.5 / plan.scale and abs(far[1] - height) <= 0.5 / plan.scale


def test_boxes_match_the_pixels_letterbox_draws():
    image = np.zeros((30, 40, 3), dtype=np.uint8)
    image[10:20, 8:24] = 255  # a white box [8, 10, 24, 20] in original pixels
    x, plan = letterbox(Image.fromarray(image), 20, 4, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    x1, y1, x2, y2 = plan.to_input(np.array([8.0, 10.0, 24.0, 20.0]))
    assert (x1, y1, x2, y2) == (4.0, 5.0, 12.0, 10.0)
    white = torch.nonzero(x[0] > 0.5)  # bicubic blurs the edges: half-white pixels are in
    assert (int(white[:, 1].min()), int(white[:, 0].min())) == (x1, y1)
    assert (int(white[:, 1].max()) + 1, int(white[:, 0].max()) + 1) == (x2, y2)


@pytest.mark.parametrize("shape", [(3,), (2, 3), (5, 1)])
def test_bad_shapes_are_refused(shape):
    plan = plan_letterbox(400, 300, 200, 16)
    with pytest.raises(DenseVLMError, match="XYXY"):
        plan.to_input(np.zeros(shape))
    with pytest.raises(DenseVLMError, match="XYXY"):
        plan.to_original(torch.zeros(shape))


def test_masks_by_hand():
    plan = plan_letterbox(4, 4, 2, 4)  # scale 0.5, content 2 x 2 padded to 4 x 4
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True  # one content pixel, fully covered
    masks[1, 0, 3] = True  # a quarter of the top-right content pixel
    out = plan.masks_to_input(masks)
    assert out.shape == (2, 4, 4) and out.dtype == torch.float32
    expected = torch.zeros(2, 4, 4)
    expected[0, 0, 0] = 1.0
    expected[1, 0, 1] = 0.25
    torch.testing.assert_close(out, expected)


def test_masks_keep_their_area_and_leave_the_padding_empty():
    plan = plan_letterbox(64, 48, 32, 16, square=True)  # scale 1 / 2, content 32 x 24, input 32 x 32
    masks = torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(0)) > 0.5
    out = plan.masks_to_input(masks)
    assert out.shape == (3, plan.input_height, plan.input_width)
    torch.testing.assert_close(out.sum(dim=(1, 2)), masks.float().sum(dim=(1, 2)) * plan.scale**2)
    assert out[:, plan.height :].abs().sum() == 0
    with pytest.raises(DenseVLMError, match="do not match"):
        plan.masks_to_input(masks[:, :47])


@pytest.mark.parametrize("mean, std", [((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
                                       ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), ([0.1, 0.9, 0.3], [0.7, 0.2, 1.3])])
def test_normalisation_is_the_float32_formula_for_every_byte(mean, std):
    from densevlm.imaging import letterbox_array, normalize_array

    rng = np.random.default_rng(0)
    pixels = np.stack(np.meshgrid(np.arange(256), np.arange(3), indexing="ij"), -1)[..., 0]  # [256, 3]: every byte
    pixels = np.concatenate([pixels[None], rng.integers(0, 256, (7, 256, 3))]).astype(np.uint8)  # [8, 256, 3]
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    formula = (pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0) - m) / s
    got = normalize_array(pixels, mean, std)
    assert got.dtype == np.float32 and got.shape == (3, 8, 256)
    np.testing.assert_array_equal(got.view(np.uint32), formula.view(np.uint32))  # to the bit
    x, plan = letterbox_array(Image.fromarray(pixels), 256, 16, mean, std, square=True)
    np.testing.assert_array_equal(x[:, : plan.height, : plan.width], formula)
    assert not x[:, plan.height:].any()


@pytest.mark.parametrize("width, height, size", [(640, 480, 64), (1000, 750, 96), (300, 200, 64)])
def test_a_large_downscale_stays_close_to_the_full_bicubic_filter(width, height, size):
    from densevlm.imaging import letterbox_array

    rng = np.random.default_rng(width)
    smooth = Image.fromarray(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)).resize(
        (width, height), Image.BICUBIC)
    x, plan = letterbox_array(smooth, size, 8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    full = np.asarray(smooth.resize((plan.width, plan.height), Image.BICUBIC), dtype=np.float32) / 255.0
    got = x[:, : plan.height, : plan.width].transpose(1, 2, 0)
    diff = np.abs(got - full) * 255.0  # grey levels; the texture is random noise, 8x upscaled (a worst case)
    assert diff.max() <= 6.5 and diff.mean() <= 1.0
    if width / plan.width < 6:  # no box reduction below 6x: exactly the full filter
        assert np.array_equal(got, full)
